"""Request schemas of the JSON API. They validate bodies and feed the OpenAPI document."""
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from cancellation.reasons import REASON_CODES, REQUEST_CHANNELS

Reason = Literal[tuple(REASON_CODES)]

# Ids are database integers: anything larger can only be a mistake (and must not reach SQL).
ID_MAX = 2**31 - 1


def _integral(value):
    """3976.0 as 3976, in lists too: JSON Schema counts a number with no fraction as an
    integer, and the document says "type": "integer". 3976.5, "3976" and true stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _integers_as_json_schema_means_them(cls, data):
        if isinstance(data, dict):
            return {key: _integral(value) for key, value in data.items()}
        return data


class TokenRequest(Body):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=80)


class CustomerRequest(Body):
    """Who asked and when: required for reason customer_requested."""

    contact: str = Field(min_length=3, max_length=254,
                         description="how the customer reached us: phone number or e-mail")
    requested_at: datetime = Field(description="when the customer asked (ISO 8601)")
    channel: Literal[REQUEST_CHANNELS] | None = None

    @field_validator("requested_at")
    @classmethod
    def _naive_utc(cls, value):
        if value.tzinfo is not None:
            from datetime import UTC
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value


class RefundChoice(Body):
    """The refund's destination a cancel body may choose (CancelRequest.refund_to)."""

    store_credit_reason: str | None = Field(
        default=None, min_length=1, max_length=500, pattern=r"\S",
        description="refund as store credit instead of the tenders that paid, for this reason "
                    "(the customer agreed); the order needs a customer")

    def refund_fields(self):
        return {"refund_to": "store_credit" if self.store_credit_reason else "original",
                "refund_to_reason": self.store_credit_reason}


class CancelOrderBody(RefundChoice):
    """PUT /api/v1/orders/:id/status"""

    status: Literal["cancelled"]
    reason: Reason
    notes: str | None = Field(default=None, max_length=2000)
    version: StrictInt | None = Field(default=None, ge=1,
                                      description="the version you saw; stale -> 409")
    notify_customer: StrictBool = True
    customer_request: CustomerRequest | None = None
    scope: Literal["this_instance", "all_future"] = "this_instance"


class RefundBody(Body):
    """POST /api/v1/orders/:id/refund (the body is optional)"""

    note: str | None = Field(default=None, max_length=500)


class InventoryReturnBody(Body):
    """PUT /api/v1/inventory/return"""

    order_id: StrictInt = Field(ge=1, le=ID_MAX)


class CustomerNotificationBody(Body):
    """POST /api/v1/notifications/customer"""

    order_id: StrictInt = Field(ge=1, le=ID_MAX)


class V2CancelBody(RefundChoice):
    """POST /api/v2/orders/:id/cancel (the runbook's body)"""

    reason: Reason
    notes: str | None = Field(default=None, max_length=2000)
    notify_stakeholders: StrictBool = True
    version: StrictInt | None = Field(default=None, ge=1, le=ID_MAX,
                                      description="the version you saw; stale -> 409")
    scope: Literal["this_instance", "all_future"] = Field(
        default="this_instance",
        description="recurring orders: this order only, or also every later order of its "
                    "series that is still cancellable")


class ReinstateBody(Body):
    """POST /api/v2/orders/:id/reinstate"""

    reason: str = Field(min_length=1, max_length=500,
                        description="why, e.g. rollback_cancellation")
    restore_previous_state: StrictBool = True
    use_store_credit: StrictBool = Field(
        default=False, description="the customer agreed to pay the balance due (refunds that "
                                   "had gone out) from their store credit, as far as it goes")


class ApprovalItem(Body):
    item_id: StrictInt = Field(ge=1, le=ID_MAX)
    quantity: StrictInt = Field(ge=1, le=100000)


class CancelItemLine(Body):
    item_id: StrictInt = Field(ge=1, le=ID_MAX, description="an item of the order (its id)")
    quantity: StrictInt = Field(ge=1, le=100000,
                                description="how many to cancel: 1 up to the open quantity")


class CancelItemsBody(RefundChoice):
    """PUT /api/v1/orders/:id/items — partial cancellation"""

    items: list[CancelItemLine] = Field(
        min_length=1, max_length=500,
        description="each item once; more lines than PARTIAL_SYNC_MAX_LINES (default 50) are "
                    "cancelled by a worker (202 with the job)")
    reason: Reason
    notes: str | None = Field(default=None, max_length=2000)
    version: StrictInt | None = Field(default=None, ge=1, le=ID_MAX,
                                      description="the version you saw; stale -> 409")
    notify_customer: StrictBool = True
    customer_request: CustomerRequest | None = None


class ApprovalRequestBody(Body):
    """POST /api/v1/orders/:id/approval_request — the seed's approval request form"""

    justification: str = Field(min_length=1, max_length=2000,
                               description="why the order must be cancelled (required)")
    reason: Reason
    notes: str | None = Field(default=None, max_length=2000)
    items: list[ApprovalItem] | None = Field(
        default=None, max_length=500,
        description="the order's open items and quantities; only whole-order cancellations "
                    "can be approved, so they must cover every open item")
    notify_customer: StrictBool = True
    customer_request: CustomerRequest | None = None
    version: StrictInt | None = Field(default=None, ge=1, le=ID_MAX,
                                      description="the version you saw; stale -> 409")


class ApproveBody(Body):
    """POST /api/v1/approval_requests/:id/approve (the body is optional)"""

    comment: str | None = Field(default=None, max_length=2000)


class RejectBody(Body):
    """POST /api/v1/approval_requests/:id/reject"""

    comment: str = Field(min_length=1, max_length=2000,
                         description="why not; the requester reads it (required)")


class BulkUpdateBody(Body):
    """POST /api/v1/orders/bulk_update"""

    order_ids: list[Annotated[StrictInt, Field(ge=1, le=ID_MAX)]] = Field(
        min_length=1, max_length=20000, description="the orders to cancel (duplicates ignored)")
    status: Literal["cancelled"]
    reason: Reason
    notes: str | None = Field(default=None, max_length=2000)
    notify_customer: StrictBool = True


class BulkJobQuery(Body):
    """GET /api/v1/bulk_jobs/:id: the items come failed first, then pending, then done."""

    model_config = ConfigDict(extra="ignore")

    page: int = Field(default=1, ge=1, le=100000)
    per_page: int = Field(default=500, ge=0, le=20000,
                          description="items per page; 0 for the counts only")


class RetryBody(Body):
    """POST /api/v1/bulk_jobs/:id/retry (the body is optional)"""

    notes: str | None = Field(default=None, max_length=2000,
                              description="notes for the new job (default: the old job's)")
