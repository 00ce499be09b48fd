"""The domain: the rules of cancelling, called by the panel, both APIs and the Celery tasks."""
from cancellation.audit import AuditContext, record, verify_chain
from cancellation.errors import (
    Blocked,
    CancelDeskError,
    ConcurrentModification,
    Forbidden,
    InvalidState,
    NotFound,
    ValidationFailed,
)
from cancellation.partial import PartialCancelRequest, cancel_items, submit_items
from cancellation.policy import can, evaluate_cancel, visible_orders
from cancellation.reasons import CancellationReason
from cancellation.service import (
    CancelOutcome,
    CancelRequest,
    cancel_order,
    get_visible_order,
    return_unreturned_stock,
    submit,
)

__all__ = [
    "AuditContext", "record", "verify_chain", "Blocked", "CancelDeskError",
    "ConcurrentModification", "Forbidden", "InvalidState", "NotFound", "ValidationFailed", "can",
    "evaluate_cancel", "visible_orders", "CancellationReason", "CancelOutcome", "CancelRequest",
    "cancel_order", "get_visible_order", "return_unreturned_stock", "PartialCancelRequest",
    "cancel_items", "submit_items", "submit",
]
