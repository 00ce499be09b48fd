"""The impact preview of a cancellation (runbook step 2). It reads and never writes."""
from cancellation.errors import CancelDeskError
from cancellation.impact import plan_full_cancel
from cancellation.policy import (
    approval_reasons,
    blockers_of,
    can,
    check_may_cancel,
    check_state,
    require_visible,
)
from cancellation.privacy import mask_email
from models import db, money


def _problem(exc):
    return {"code": exc.code, "http_status": exc.status, "message": exc.message}


def preview_cancel(actor, order, *, reason=None, notify=True):
    """Everything a cancel by `actor` would do to `order`, and everything that would stop it."""
    require_visible(actor, order)
    problems = []
    for check in (lambda: check_may_cancel(actor, order, reason), lambda: check_state(order)):
        try:
            check()
        except CancelDeskError as exc:
            problems.append(_problem(exc))
    blockers = [_problem(exc) for exc in blockers_of(order)]
    why = approval_reasons(actor, order)
    impact = plan_full_cancel(order)
    show = (lambda r: r) if can(actor, "view_customer_contact") else mask_email
    if problems or blockers:
        outcome = "rejected"
    else:
        outcome = "approval_required" if why else "cancel"
    answer = {
        "order_id": order.id, "order_number": order.number, "status": order.status,
        "version": order.version, "total": money(order.total_cents),
        "outcome": outcome,
        "errors": problems + blockers,
        "blockers": blockers,
        "approval": {"required": bool(why), "reasons": why},
        **impact.to_dict(notify=notify, recipient_view=show),
    }
    db.session.rollback()  # nothing was written; make sure nothing is
    return answer
