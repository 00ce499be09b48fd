"""Response shapes of the JSON API, as pydantic models: the OpenAPI document is generated from
them, and the tests validate real responses against them so the document cannot drift."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OrderStatusName = Literal["pending", "in_progress", "on_hold", "completed", "cancelled",
                          "archived"]
DeliveryState = Literal["pending", "processing", "succeeded", "failed", "voided",
                        "awaiting_payout"]
NoticeState = Literal["pending", "processing", "sent", "failed", "voided"]


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorBody(Out):
    error: ErrorDetail


class Token(Out):
    token: str
    token_type: Literal["Bearer"]
    user_id: int
    role: str
    expires_at: str | None = Field(description="ISO 8601 (UTC); after it the token answers 401")


class OrderSummary(Out):
    id: int
    number: str
    store_id: int
    status: OrderStatusName
    version: int
    placed_at: str
    total: str
    payment_status: str
    billing_hold: bool
    shipment_status: str
    customer_id: int | None


class OrderList(Out):
    items: list[OrderSummary]
    total: int
    page: int
    per_page: int


class Customer(Out):
    id: int
    name: str
    email: str | None
    phone: str | None
    loyalty_points: int
    store_credit: str


class Payment(Out):
    id: int
    tender: Literal["cash", "debit", "card", "store_credit"]
    amount: str
    refunded: str
    processor_reference: str | None


class OrderItem(Out):
    id: int
    product_id: int
    sku: str
    name: str
    quantity: int
    cancelled_quantity: int
    unit_price: str


class Refund(Out):
    id: int
    amount: str
    status: DeliveryState
    method: str | None
    tender: str | None
    payment_id: int | None
    attempts: int
    gateway_reference: str | None
    drawer: str | None
    paid_out_by: str | None
    last_error: str | None
    created_at: str | None
    succeeded_at: str | None


class Notification(Out):
    id: int
    channel: str
    template: str
    recipient: str | None
    status: NoticeState
    attempts: int
    last_error: str | None
    created_at: str | None
    sent_at: str | None


class CancellationLine(Out):
    order_item_id: int
    product_id: int
    quantity: int
    stock_returned: bool


class Cancellation(Out):
    model_config = ConfigDict(extra="allow")

    id: int
    kind: Literal["full", "partial"]
    reason: str
    notes: str | None
    actor_id: int | None
    source: str
    created_at: str | None
    refund_amount: str
    points_restored: int
    points_reversed: int
    items: list[CancellationLine]


class Flags(Out):
    inventory_reconciliation: bool
    manual_refund: bool
    manual_notification: bool


class Approval(Out):
    model_config = ConfigDict(extra="allow")

    id: int
    order_id: int
    status: str
    requested_by: int
    why: list[str]
    justification: str | None
    requested_cancellation: dict
    created_at: str | None


class OrderDetail(OrderSummary):
    model_config = ConfigDict(extra="allow")

    subtotal: str
    tax: str
    discount: str
    paid: str
    refunded: str
    payment_method: str | None
    points_earned: int
    points_redeemed: int
    series_id: str | None
    cancelled_at: str | None
    customer: Customer | None
    items: list[OrderItem]
    payments: list[Payment]
    balance_due: str
    refunds: list[Refund]
    notifications: list[Notification]
    cancellations: list[Cancellation]
    flags: Flags


class SeriesProblem(Out):
    order_id: int
    number: str | None
    code: str
    message: str


class ApprovalAccepted(Out):
    """Accepted, not done yet: approval is required (approval_request), or maintenance mode
    queued the cancel (queued, job_id, status_url; poll GET /api/v1/cancel_jobs/:id)"""

    approval_request: Approval | None = None
    message: str
    queued: bool | None = None
    order_id: int | None = None
    job_id: int | None = None
    status: Literal["queued"] | None = None
    status_url: str | None = None
    # scope all_future: what happened to the later instances of the series
    also_cancelled: list[int] | None = None
    approval_requested: list[Approval] | None = None
    also_failed: list[SeriesProblem] | None = None


class ItemsCancelled(OrderDetail):
    """The order after the partial cancellation (as GET /api/v1/orders/:id), with what the
    cancellation did"""

    cancellation: Cancellation
    message: str


class ItemsAccepted(Out):
    """Accepted, not done yet: approval is required (approval_request); or a worker cancels the
    items — a long request (status processing) or one made in maintenance mode (queued, run when
    it ends): poll status_url"""

    message: str
    approval_request: Approval | None = None
    queued: bool | None = None
    order_id: int | None = None
    job_id: int | None = None
    status: Literal["processing", "queued"] | None = None
    status_url: str | None = None


class StockLevel(Out):
    store_id: int
    product_id: int
    sku: str
    on_hand: int
    reserved: int
    available: int


class Inventory(Out):
    items: list[StockLevel]


class RefundsOfOrder(Out):
    order_id: int
    refunds: list[Refund]


class ReturnedLine(Out):
    product_id: int
    quantity: int


class InventoryReturned(Out):
    order_id: int
    returned: list[ReturnedLine]
    message: str


class NotificationQueued(Out):
    order_id: int
    notification: Notification


class Health(Out):
    database: str
    redis: str
    worker: str


class UserRoles(Out):
    user_id: int
    email: str
    roles: list[str]
    active: bool
    stores: list[int]
    all_stores: bool
    capabilities: list[str]


class OrderState(Out):
    order_id: int
    number: str
    status: OrderStatusName
    version: int
    cancellable: bool
    updated_at: str | None


class Problem(Out):
    code: str
    message: str


class Dependencies(Out):
    order_id: int
    billing_hold: bool
    shipment_status: str
    payment_status: str
    recurring_series: str | None
    blockers: list[Problem]


class Metadata(Out):
    order_id: int
    number: str
    store_id: int
    placed_at: str
    age_days: int
    total: str
    auto_approval_eligible: bool
    approval_reasons: list[str]


class PreviewProblem(Out):
    code: str
    http_status: int
    message: str


class PreviewLine(Out):
    order_item_id: int
    product_id: int
    sku: str
    name: str
    quantity: int
    returns_to_stock: bool


class RefundShare(Out):
    tender: str
    paid_in: str
    amount: str
    how: Literal["processor", "counter", "store_credit"]


class PreviewRefund(Out):
    amount: str
    method: str | None
    will_refund: bool
    split: list[RefundShare]


class PreviewLoyalty(Out):
    points_to_restore: int
    points_to_reverse: int


class PreviewNotification(Out):
    channel: str
    template: str
    recipient: str | None


class PreviewApproval(Out):
    required: bool
    reasons: list[str]


class Preview(Out):
    order_id: int
    order_number: str
    status: OrderStatusName
    version: int
    total: str
    outcome: Literal["cancel", "approval_required", "rejected"]
    errors: list[PreviewProblem]
    blockers: list[PreviewProblem]
    approval: PreviewApproval
    stock_to_return: list[PreviewLine]
    units_to_return: int
    inventory_reconciliation: bool
    refund: PreviewRefund
    loyalty: PreviewLoyalty
    notifications: list[PreviewNotification]


class CancelAccepted(Out):
    order_id: int
    status: Literal["processing", "pending_approval", "queued"]
    job_id: int
    status_url: str
    approval_request: Approval | None = None
    queued: bool | None = None  # maintenance mode: processed when it ends
    message: str | None = None
    also_cancelled: list[int] | None = None
    also_pending_approval: list[int] | None = None


class CancelState(Out):
    order_id: int
    status: Literal["processing", "pending_approval", "completed", "failed", "queued"]
    order_status: OrderStatusName
    job_id: int | None
    requested_at: str | None = None
    finished_at: str | None = None
    error: Problem | None = None
    cancellation_id: int | None = None
    approval_request_id: int | None = None
    # scope all_future: later instances of the series this job cancelled / sent for approval
    also_cancelled: list[int] | None = None
    also_pending_approval: list[int] | None = None


class Reason(Out):
    code: str
    message: str


class MoneyEffect(Out):
    refund_id: int
    tender: str | None
    amount: str
    status: str
    effect: Literal["void", "balance_due", "store_credit"]
    message: str
    due: str
    store_credit_taken_back: str


class StockBack(Out):
    sku: str
    name: str
    quantity: int
    reserved_again: bool


class PointsBack(Out):
    taken_back: int
    given_back: int


class ReinstateEffects(Out):
    """What reinstating would do: the status, the stock, the points and the money."""

    status: str | None
    stock: list[StockBack]
    points: PointsBack
    money: list[MoneyEffect]
    paid_from_store_credit: str
    balance_due: str


class Eligibility(Out):
    eligible: bool
    reasons: list[Reason]
    deadline: str | None
    cancellation_id: int | None
    effects: ReinstateEffects | None


class Reinstated(Out):
    order_id: int
    status: OrderStatusName
    version: int
    reinstated: bool
    payment_status: str
    balance_due: str


class Billing(Out):
    order_id: int
    payment_status: str
    paid: str
    refunded: str
    refunds: list[Refund]


class NotificationHistory(Out):
    order_id: int
    notifications: list[Notification]


class AuditEntry(Out):
    seq: int
    at: str | None
    action: str
    user_id: int | None
    actor: str | None
    request_id: str | None
    before: dict | None
    after: dict | None


class AuditLog(Out):
    order_id: int
    events: list[AuditEntry]


class ApprovalRequestDetail(Approval):
    status: Literal["pending", "escalated", "approved", "rejected", "expired", "stale",
                    "withdrawn"]
    order_version: int
    expires_at: str | None
    escalated_at: str | None
    decided_by: int | None
    decided_at: str | None
    comment: str | None
    status_detail: str | None
    cancellation_id: int | None


class ApprovalFiled(Out):
    approval_request: ApprovalRequestDetail
    created: bool
    message: str


class ApprovalDecided(Out):
    approval_request: ApprovalRequestDetail
    order: OrderDetail
    message: str


class ApprovalRequestView(Out):
    approval_request: ApprovalRequestDetail


BulkJobStatusName = Literal["queued", "running", "completed", "completed_with_errors", "failed"]


class BulkAccepted(Out):
    job_id: int
    status: BulkJobStatusName
    total: int
    status_url: str
    page_url: str


class BulkItem(Out):
    order_id: int
    order_number: str | None
    status: Literal["pending", "succeeded", "failed"]
    error: str | None
    message: str | None
    cancellation_id: int | None
    finished_at: str | None


class BulkJobState(Out):
    id: int
    status: BulkJobStatusName
    total: int
    processed: int
    succeeded: int
    failed: int
    pending: int
    percent: int
    reason: str
    notes: str | None
    notify_customer: bool
    retry_of: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    page: int
    per_page: int
    items: list[BulkItem]
