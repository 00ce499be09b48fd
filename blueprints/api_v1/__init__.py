"""API v1 — the CMS document's endpoints. Parse, authorize, call the domain, serialize."""
from typing import Literal

from flask import Blueprint, jsonify, url_for
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from blueprints.api_common import (
    audit_context,
    parse_json,
    parse_query,
    require_token_user,
    responses as out,
)
from blueprints.api_common.openapi import documented
from blueprints.api_common.schemas import (
    ID_MAX,
    ApprovalRequestBody,
    ApproveBody,
    CancelOrderBody,
    CustomerNotificationBody,
    InventoryReturnBody,
    RefundBody,
    RejectBody,
)
from blueprints.api_common.serializers import (
    Viewer,
    approval_dict,
    notification_dict,
    order_dict,
    order_summary,
    refund_dict,
)
from blueprints.auth.permissions import requires
from cancellation import (
    CancelRequest,
    approvals,
    get_visible_order,
    maintenance,
    orders as orders_query,
    outbox,
    return_unreturned_stock,
    submit,
)
from cancellation.errors import NotFound, ValidationFailed
from cancellation.jobs import job_state
from cancellation.policy import scoped
from models import CancelJob, Order, Role, StockLevel, db, isoformat
from models.order import OrderStatus, PaymentStatus, ShipmentStatus

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
bp.before_request(require_token_user)


class OrdersQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    status: Literal[tuple(s.value for s in OrderStatus)] | None = None
    store_id: int | None = Field(default=None, ge=1, le=ID_MAX)
    billing_hold: bool | None = None
    shipment_status: Literal[tuple(s.value for s in ShipmentStatus)] | None = None
    payment_status: Literal[tuple(s.value for s in PaymentStatus)] | None = None
    q: str | None = Field(default=None, max_length=100)
    page: int = Field(default=1, ge=1, le=100000)
    per_page: int = Field(default=25, ge=1, le=200)


class InventoryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    store_id: int | None = Field(default=None, ge=1, le=ID_MAX)
    product_id: int | None = Field(default=None, ge=1, le=ID_MAX)


@bp.get("/orders")
@documented("List orders, newest first", query=OrdersQuery, responses={200: out.OrderList})
@requires("view_orders")
def list_orders():
    """`q` finds a part of the order number or of the customer's name, ignoring case — and, if
    you may see customer contact details, of their e-mail or the digits of their phone."""
    args = parse_query(OrdersQuery)
    listed = orders_query.order_page(current_user, args, args.page, args.per_page, clamp=False)
    return jsonify({"items": [order_summary(o) for o in listed.orders], "total": listed.total,
                    "page": args.page, "per_page": args.per_page})


@bp.get("/orders/<int:order_id>")
@documented("One order with items, refunds, notifications and flags",
            responses={200: out.OrderDetail})
@requires("view_orders")
def get_order(order_id):
    return jsonify(order_dict(get_visible_order(current_user, order_id), current_user))


@bp.get("/inventory")
@documented("Stock levels of the stores you work in", query=InventoryQuery,
            responses={200: out.Inventory})
@requires("view_orders")
def inventory():
    args = parse_query(InventoryQuery)
    query = scoped(select(StockLevel).order_by(StockLevel.store_id, StockLevel.product_id),
                   current_user, StockLevel.store_id)
    if args.store_id:
        query = query.where(StockLevel.store_id == args.store_id)
    if args.product_id:
        query = query.where(StockLevel.product_id == args.product_id)
    return jsonify({"items": [s.to_dict() for s in db.session.scalars(query.limit(5000))]})


@bp.put("/orders/<int:order_id>/status")
@documented("Cancel an order (or file an approval request)", body=CancelOrderBody,
            responses={200: out.OrderDetail, 202: out.ApprovalAccepted},
            errors=(400, 403, 404, 409))
@requires("request_cancellation")
def update_status(order_id):
    """202 with `approval_request` when approval is required; 202 with `queued` in maintenance
    mode (poll `status_url`). Scope all_future adds what happened to the later orders of the
    series: `also_cancelled`, `approval_requested`, `also_failed`."""
    body = parse_json(CancelOrderBody)
    contact = body.customer_request
    request = CancelRequest(
        reason=body.reason, notes=body.notes, notify_customer=body.notify_customer,
        expected_version=body.version, scope=body.scope,
        **body.refund_fields(),
        request_contact=contact.contact if contact else None,
        request_channel=contact.channel if contact else None,
        requested_at=contact.requested_at if contact else None)
    viewer = Viewer.of(current_user)  # the commit below expires the user: not read again
    outcome = submit(order_id, current_user, request, audit_context("api_v1"))
    if outcome.queued:
        return jsonify(maintenance.queued_answer(
            outcome.job, url_for("api_v1.cancel_job", job_id=outcome.job.id))), 202
    if outcome.needs_approval:
        return jsonify({"approval_request": approval_dict(outcome.approval_request, viewer),
                        "message": "Approval is required before this order can be cancelled.",
                        **series_fields(outcome, viewer)}), 202
    body = order_dict(db.session.get(Order, order_id), viewer)
    return jsonify({**body, **series_fields(outcome, viewer)})


def series_fields(outcome, viewer):
    """Scope all_future: the later orders of the series cancelled, sent for approval, refused."""
    fields = {}
    if outcome.also_cancelled:
        fields["also_cancelled"] = [o.order.id for o in outcome.also_cancelled]
    if outcome.also_pending_approval:
        fields["approval_requested"] = [approval_dict(o.approval_request, viewer)
                                        for o in outcome.also_pending_approval]
    if outcome.also_failed:
        fields["also_failed"] = outcome.also_failed
    return fields


@bp.get("/cancel_jobs/<int:job_id>")
@documented("A cancellation queued in maintenance mode, and its outcome",
            responses={200: out.CancelState}, errors=(401, 403, 404))
@requires("request_cancellation")
def cancel_job(job_id):
    """`queued` until maintenance ends, then `processing` and `completed`, `failed` (with the
    error that stopped it) or `pending_approval`. Only its requester and admins see a job."""
    job = db.session.get(CancelJob, job_id)
    if job is None or not (job.user_id == current_user.id
                           or current_user.role == Role.ADMIN.value):
        raise NotFound("Cancel job not found.")
    return jsonify(job_state(job, db.session.get(Order, job.order_id)))


@bp.post("/orders/<int:order_id>/refund")
@documented("Retry the refund of a cancelled order", body=RefundBody,
            responses={202: out.RefundsOfOrder}, errors=(400, 401, 403, 404, 409))
@requires("retry_delivery")
def reprocess_refund(order_id):
    parse_json(RefundBody, optional=True)
    order = get_visible_order(current_user, order_id)
    refunds = outbox.reprocess_refund(order, current_user, audit_context("api_v1"))
    return jsonify({"order_id": order.id, "refunds": [refund_dict(r) for r in refunds]}), 202


@bp.put("/inventory/return")
@documented("Return a cancelled order's unreturned items to stock", body=InventoryReturnBody,
            responses={200: out.InventoryReturned})
@requires("reconcile_inventory")
def return_inventory():
    body = parse_json(InventoryReturnBody)
    order = get_visible_order(current_user, body.order_id)
    returned = return_unreturned_stock(order, current_user, audit_context("api_v1"))
    return jsonify({"order_id": order.id, "returned": returned,
                    "message": "Nothing left to return." if not returned else
                    f"Returned {sum(r['quantity'] for r in returned)} units to stock."})


@bp.post("/notifications/customer")
@documented("Send the cancellation notice (again)", body=CustomerNotificationBody,
            responses={202: out.NotificationQueued}, errors=(400, 401, 403, 404, 409))
@requires("retry_delivery")
def notify_customer():
    body = parse_json(CustomerNotificationBody)
    order = get_visible_order(current_user, body.order_id)
    notification = outbox.resend_notification(order, current_user, audit_context("api_v1"))
    return jsonify({"order_id": order.id, "notification": notification_dict(notification)}), 202


# --- approvals (SPEC §3, seed A2) ------------------------------------------------------------

def approval_request_dict(approval, viewer):
    return {**approval_dict(approval, viewer), "order_version": approval.order_version,
            "expires_at": isoformat(approval.expires_at),
            "escalated_at": isoformat(approval.escalated_at),
            "decided_by": approval.decided_by_id, "decided_at": isoformat(approval.decided_at),
            "comment": approval.comment, "status_detail": approval.status_detail,
            "cancellation_id": approval.cancellation_id}


def check_whole_order(order, items):
    """`items` may be sent, but an approval performs a whole-order cancellation: they must name
    every open item with its open quantity."""
    asked = {}
    for line in items:
        asked[line.item_id] = asked.get(line.item_id, 0) + line.quantity
    open_items = {i.id: i.open_quantity for i in order.items if i.open_quantity > 0}
    if asked != open_items:
        raise ValidationFailed(
            "items: an approval request cancels the whole order; list every open item with its "
            "open quantity, or leave items out.",
            details={"fields": [{"field": "items", "message": "must cover every open item"}],
                     "open_items": [{"item_id": k, "quantity": v} for k, v in open_items.items()]})


@bp.post("/orders/<int:order_id>/approval_request")
@documented("Request approval to cancel an order", body=ApprovalRequestBody,
            responses={201: out.ApprovalFiled, 200: out.ApprovalFiled},
            errors=(400, 401, 403, 404, 409))
@requires("request_cancellation")
def request_approval(order_id):
    """Files the request (201) and notifies the approvers; asking again while your request is
    open answers 200 with it. 409 `approval_not_required` when you may cancel directly."""
    body = parse_json(ApprovalRequestBody)
    order = get_visible_order(current_user, order_id)
    if body.items is not None:
        check_whole_order(order, body.items)
    contact = body.customer_request
    request = CancelRequest(
        reason=body.reason, notes=body.notes, notify_customer=body.notify_customer,
        expected_version=body.version,
        request_contact=contact.contact if contact else None,
        request_channel=contact.channel if contact else None,
        requested_at=contact.requested_at if contact else None)
    approval, created = approvals.request_approval(order.id, current_user, request,
                                                   body.justification, audit_context("api_v1"))
    message = ("Approval requested; the approvers have been notified." if created
               else "You already have an open request for this order.")
    return jsonify({"approval_request": approval_request_dict(approval, current_user),
                    "created": created, "message": message}), 201 if created else 200


@bp.get("/approval_requests/<int:approval_id>")
@documented("One approval request and its state", responses={200: out.ApprovalRequestView})
@requires("request_cancellation")
def get_approval_request(approval_id):
    approval = approvals.get_visible_request(current_user, approval_id)
    return jsonify({"approval_request": approval_request_dict(approval, current_user)})


@bp.post("/approval_requests/<int:approval_id>/approve")
@documented("Approve: perform the requested cancellation as the approver", body=ApproveBody,
            responses={200: out.ApprovalDecided}, errors=(400, 401, 403, 404, 409, 503))
@requires("approve_cancellation")
def approve_request(approval_id):
    """403 `self_approval` for your own request, 403 `approver_lacks_authority` when your own
    policy needs approval (the request is escalated); 409 `approval_stale` when the order changed
    since the request (marked stale), `approval_expired`, `approval_closed`; 503
    `maintenance_mode` while maintenance is on (the request stays open)."""
    body = parse_json(ApproveBody, optional=True)
    approval = approvals.approve(approval_id, current_user, body.comment,
                                 audit_context("api_v1"))
    return jsonify({"approval_request": approval_request_dict(approval, current_user),
                    "order": order_dict(db.session.get(Order, approval.order_id), current_user),
                    "message": f"Approved; order {approval.order.number} is cancelled."
                    if approval.cancellation.kind == "full" else
                    f"Approved; the requested items of order {approval.order.number} are "
                    "cancelled."})


@bp.post("/approval_requests/<int:approval_id>/reject")
@documented("Reject, with the comment the requester reads", body=RejectBody,
            responses={200: out.ApprovalDecided}, errors=(400, 401, 403, 404, 409))
@requires("approve_cancellation")
def reject_request(approval_id):
    body = parse_json(RejectBody)
    approval = approvals.reject(approval_id, current_user, body.comment, audit_context("api_v1"))
    return jsonify({"approval_request": approval_request_dict(approval, current_user),
                    "order": order_dict(db.session.get(Order, approval.order_id), current_user),
                    "message": f"Rejected; order {approval.order.number} was not changed."})


@bp.post("/approval_requests/<int:approval_id>/withdraw")
@documented("Withdraw your own open request (the approvers who were asked are told)",
            body=ApproveBody, responses={200: out.ApprovalDecided},
            errors=(400, 401, 403, 404, 409))
@requires("request_cancellation")
def withdraw_request(approval_id):
    """403 `not_requester` for someone else's request; 409 `approval_closed` once it is decided,
    expired, stale or withdrawn (of a withdrawal and a decision at the same moment, one wins)."""
    body = parse_json(ApproveBody, optional=True)
    approval = approvals.withdraw(approval_id, current_user, body.comment,
                                  audit_context("api_v1"))
    return jsonify({"approval_request": approval_request_dict(approval, current_user),
                    "order": order_dict(db.session.get(Order, approval.order_id), current_user),
                    "message": f"Withdrawn; order {approval.order.number} was not changed."})


# Importing them registers their routes on bp: bulk cancels, and PUT .../items.
from blueprints.api_v1 import bulk as _bulk_routes, items as _items_routes  # noqa: E402,F401
