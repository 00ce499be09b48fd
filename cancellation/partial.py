"""Partial cancellation (seed A3, "Modify Order"): cancel some quantities of some items.

The same rules as a full cancel (`service.cancel_order`): one transaction with the order row
locked and the version checked, SPEC §1's checks in the same order, an approval request instead
when policy requires one, and every effect of SPEC §2 written together by the one writer
(`service.perform` → `plan` → `effects`) — for exactly the quantities asked. An order with
nothing left open becomes `cancelled`. The arithmetic is `cancellation/plan.py`'s.
"""
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from cancellation import maintenance, outbox
from cancellation.audit import AuditContext
from cancellation.errors import Blocked, CancelDeskError, ConcurrentModification, ValidationFailed
from cancellation.impact import refund_split, stock_lines
from cancellation.locks import lock_order, plans_for, refresh_items
from cancellation.policy import (
    approval_reasons,
    blockers_of,
    can,
    check_may_cancel,
    check_state,
    evaluate_cancel,
    require_visible,
)
from cancellation.privacy import mask_email
from cancellation.service import CancelRequest, after_commit, file_approval_request, perform
from models import ApprovalRequest, CancelJob, Cancellation, Order, db, money
from models.order import OrderStatus

# The most lines one request may name (the API refuses longer lists before they get here).
MAX_LINES = 500
QUANTITY_MAX = 100000
ID_MAX = 2**31 - 1


# --- the request -----------------------------------------------------------------------------

@dataclass
class PartialCancelRequest(CancelRequest):
    """A CancelRequest for some items: `lines` is [(order item id, quantity to cancel)]."""

    lines: list = field(default_factory=list)

    def validate(self):
        problems = {}
        try:
            super().validate()
        except ValidationFailed as exc:
            problems.update((p["field"], p["message"]) for p in exc.details["fields"])
        if self.scope != "this_instance":
            problems["scope"] = "a partial cancellation applies to this order only"
        problems.update(line_problems(self.lines))
        if problems:
            raise invalid(problems, "The cancellation request is invalid")
        return self

    def to_payload(self):
        return {**super().to_payload(),
                "items": [{"item_id": item_id, "quantity": quantity}
                          for item_id, quantity in self.lines]}

    @classmethod
    def from_payload(cls, payload):
        data = dict(payload)
        lines = [(line["item_id"], line["quantity"]) for line in data.pop("items", None) or []]
        if data.get("requested_at"):
            data["requested_at"] = datetime.fromisoformat(data["requested_at"])
        return cls(**data, lines=lines)


def _whole_number(value):
    return isinstance(value, int) and not isinstance(value, bool)


def line_problems(lines):
    """What is wrong with the lines themselves, without looking at the order: {field: message}."""
    if not isinstance(lines, (list, tuple)) or not lines:
        return {"items": "name at least one item and the quantity to cancel"}
    if len(lines) > MAX_LINES:
        return {"items": f"at most {MAX_LINES} items per request"}
    problems, seen = {}, {}
    for index, line in enumerate(lines):
        try:
            item_id, quantity = line
        except (TypeError, ValueError):
            problems[f"items.{index}"] = "must be an item id and a quantity"
            continue
        if not _whole_number(item_id) or not 1 <= item_id <= ID_MAX:
            problems[f"items.{index}.item_id"] = "must be an order item id"
        elif item_id in seen:
            problems[f"items.{index}.item_id"] = (
                f"item {item_id} is already listed (items.{seen[item_id]}); list each item "
                "once with the whole quantity to cancel")
        else:
            seen[item_id] = index
        if not _whole_number(quantity) or quantity < 1:
            problems[f"items.{index}.quantity"] = "must be a whole number of at least 1"
        elif quantity > QUANTITY_MAX:
            problems[f"items.{index}.quantity"] = f"must be at most {QUANTITY_MAX}"
    return problems


def invalid(problems, what):
    return ValidationFailed(
        f"{what}: " + "; ".join(f"{name}: {message}" for name, message in problems.items()),
        details={"fields": [{"field": name, "message": message}
                            for name, message in problems.items()]})


def resolve_lines(order, lines):
    """[(OrderItem, quantity)] for the request's lines, or ValidationFailed naming each line
    that is not an item of this order or asks for more than is still open."""
    items = {item.id: item for item in order.items}
    problems, resolved = {}, []
    for index, (item_id, quantity) in enumerate(lines):
        item = items.get(item_id)
        if item is None:
            problems[f"items.{index}.item_id"] = f"{item_id} is not an item of order {order.number}"
        elif item.open_quantity <= 0:
            problems[f"items.{index}.quantity"] = (
                f"nothing of {item.product.name} is left to cancel (all {item.quantity} "
                "already cancelled)")
        elif quantity > item.open_quantity:
            problems[f"items.{index}.quantity"] = (
                f"at most {item.open_quantity} of {item.product.name} can be cancelled "
                f"({item.quantity} ordered, {item.cancelled_quantity} already cancelled)")
        else:
            resolved.append((item, quantity))
    if problems:
        error = invalid(problems, f"These items cannot be cancelled from order {order.number}")
        error.details["open_items"] = [{"item_id": i.id, "quantity": i.open_quantity}
                                       for i in order.items if i.open_quantity > 0]
        raise error
    return resolved


def plan(order, lines):
    """The Plan of cancelling `lines` ([(item, quantity)]) of `order`: what the cancellation
    would write. Reads only."""
    [planned] = plans_for([(order, None, lines)])
    return planned


# --- cancelling ------------------------------------------------------------------------------

@dataclass
class PartialOutcome:
    """The cancellation performed, the approval request filed instead, or the job queued."""

    order: Order
    cancellation_id: int | None = None
    approval_request: ApprovalRequest | None = None
    job: CancelJob | None = None
    created: bool = True  # False: the approval request is the requester's open one

    @property
    def needs_approval(self):
        return self.approval_request is not None

    @property
    def cancellation(self):
        """The cancellation performed (read when asked for), or None."""
        if self.cancellation_id is None:
            return None
        return db.session.get(Cancellation, self.cancellation_id)


def cancel_items(order_id, actor, request, context=None, *, justification=None):
    """Cancel the request's quantities of some items of an order, or file an approval request
    when policy requires one. Commits and hands the outbox to the workers; raises a
    CancelDeskError (with nothing changed) otherwise.

    `justification` (the panel's approval form) asks for approval: it is required then, and
    refused with 409 `approval_not_required` when the actor may cancel directly.
    """
    from cancellation.approvals import check_justification

    request.validate()
    if justification is not None:
        justification = check_justification(justification)
    context = context or AuditContext()
    try:
        order = lock_order(order_id)
        decision = evaluate_cancel(actor, order, reason=request.reason,
                                   expected_version=request.expected_version)
        refresh_items(order)
        resolve_lines(order, request.lines)  # nothing is filed for lines that cannot be done
        if decision.needs_approval:
            approval, created = _file_approval(order, actor, request, decision.why, context,
                                               justification)
            db.session.commit()
            return PartialOutcome(order=order, approval_request=approval, created=created)
        if justification is not None:
            raise Blocked(f"You may cancel items of order {order.number} yourself; no approval "
                          "is needed.", code="approval_not_required")
        done = perform_partial_cancel(order, actor, request, context)
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        current = db.session.get(Order, order_id)
        raise ConcurrentModification(current.version if current else None) from None
    except Exception:
        db.session.rollback()
        raise
    after_commit(actor, done.store_id, context)
    return PartialOutcome(order=order, cancellation_id=done.cancellation_id)


def _file_approval(order, actor, request, why, context, justification):
    """File the request (or join the actor's open one for the same items). (approval, created)"""
    from cancellation.approvals import OPEN

    open_before = db.session.scalar(select(ApprovalRequest.id).where(
        ApprovalRequest.order_id == order.id, ApprovalRequest.requested_by_id == actor.id,
        ApprovalRequest.status.in_(OPEN)))
    approval = file_approval_request(order, actor, request, why, context,
                                     justification=justification)
    created = approval.id != open_before
    if not created and justification and not approval.justification:
        approval.justification = justification  # a request filed by the API had none
    return approval, created


def perform_partial_cancel(order, actor, request, context):
    """SPEC §2 for the request's lines, inside the caller's transaction with the order row
    locked (the approval of a partial request calls it too); the caller commits. Returns the
    Plan written."""
    refresh_items(order)
    return perform(order, actor, request, context, lines=resolve_lines(order, request.lines))


def describe(cancellation):
    """One sentence for the person who did it (panel flash, API message)."""
    order = cancellation.order
    items = ", ".join(f"{line.quantity} \u00d7 {line.product.name}" for line in cancellation.items)
    if order.status == OrderStatus.CANCELLED.value:
        parts = [f"Cancelled {items} from order {order.number}; nothing is left open, so the "
                 "order is now cancelled."]
    else:
        parts = [f"Cancelled {items} from order {order.number}; its total is now "
                 f"${money(order.total_cents)}."]
    parts.append(f"Refund of ${money(cancellation.refund_cents)} queued;"
                 if cancellation.refund_cents else "Nothing to refund;")
    parts.append("customer will be notified." if cancellation.notify_customer
                 else "customer will not be notified.")
    if cancellation.flag_inventory_reconciliation:
        parts.append("Some items had no stock record: flagged for inventory reconciliation.")
    return " ".join(parts)


def request_summary(order, payload):
    """What a stored request (an approval request's or a job's payload) would cancel, for the
    people deciding on it: None for a whole-order request, else {"lines": [(quantity, name)],
    "units", "refund_cents" (None when the lines no longer fit the order), "closes_order"}."""
    lines = [(line["item_id"], line["quantity"]) for line in payload.get("items") or []]
    if not lines:
        return None
    items = {item.id: item for item in order.items}
    summary = {"lines": [(quantity, items[item_id].product.name if item_id in items
                          else f"item #{item_id}") for item_id, quantity in lines],
               "units": sum(quantity for _, quantity in lines), "refund_cents": None,
               "closes_order": False}
    try:
        planned = plan(order, resolve_lines(order, lines))
    except ValidationFailed:
        return summary
    summary.update(refund_cents=planned.refund_cents, closes_order=planned.closes)
    return summary


# --- large requests: the worker does them ----------------------------------------------------

def sync_limit():
    return int(current_app.config.get("PARTIAL_SYNC_MAX_LINES", 50))


def submit_items(order_id, actor, request, context=None, *, justification=None):
    """The entry point of the API and the panel: up to PARTIAL_SYNC_MAX_LINES lines are
    cancelled at once (`cancel_items`); a longer request is checked now (so its caller gets
    400/403/404/409 at once) and cancelled by a worker through a CancelJob, like API v2's
    asynchronous cancel. An approval request is filed at once either way.

    In maintenance mode the request is stored as a queued CancelJob instead, checked in full
    and cancelled when maintenance ends (`maintenance.queue_cancel`); asking for approval (a
    `justification`) goes on, as it changes nothing.
    """
    from cancellation import jobs

    if justification is None and maintenance.is_on():
        job = maintenance.queue_cancel(order_id, actor, request, context or AuditContext())
        return PartialOutcome(order=db.session.get(Order, order_id), job=job)
    if len(request.lines) <= sync_limit():
        return cancel_items(order_id, actor, request, context, justification=justification)
    request.validate()
    context = context or AuditContext()
    try:
        order = require_visible(actor, db.session.get(Order, order_id))
        decision = evaluate_cancel(actor, order, reason=request.reason,
                                   expected_version=request.expected_version)
        resolve_lines(order, request.lines)
        checked_version = order.version
    finally:
        db.session.rollback()  # nothing written; the checks are repeated under the lock
    if decision.needs_approval or justification is not None:
        return cancel_items(order_id, actor, request, context, justification=justification)
    # The worker cancels only the version checked here: a redelivered job, or one that finds
    # the order changed since, fails with concurrent_modification instead of cancelling twice.
    job = CancelJob(order_id=order_id, user_id=actor.id,
                    payload={**request.to_payload(), "expected_version": checked_version},
                    source=context.source, request_id=context.request_id, ip=context.ip)
    db.session.add(job)
    db.session.commit()
    outbox.hand_to_workers(jobs.TASK, job.id)
    return PartialOutcome(order=db.session.get(Order, order_id), job=job)


def run_job_payload(order_id, actor, payload, context):
    """Worker side of a queued partial cancellation (called by `jobs.run_cancel_job`)."""
    return cancel_items(order_id, actor, PartialCancelRequest.from_payload(payload), context)


# --- preview (the panel's live summary) ------------------------------------------------------

def preview_items(actor, order, lines, *, notify=True):
    """What cancelling `lines` ([(item id, quantity)]) of `order` by `actor` would do, and what
    would stop it. Reads only; the cancellation itself checks everything again."""
    require_visible(actor, order)
    problems = []
    for check in (lambda: check_may_cancel(actor, order, None), lambda: check_state(order)):
        try:
            check()
        except CancelDeskError as exc:
            problems.append({"code": exc.code, "message": exc.message})
    blockers = [{"code": exc.code, "message": exc.message} for exc in blockers_of(order)]
    why = approval_reasons(actor, order)
    answer = {"order_id": order.id, "version": order.version, "errors": problems,
              "blockers": blockers, "approval": {"required": bool(why), "reasons": why},
              "fields": [], "lines": [], "units": 0, "closes_order": False,
              "refund": money(0), "refund_cents": 0, "refund_split": [], "points_restored": 0,
              "points_reversed": 0, "totals_after": None, "notification": None}
    lines = [line for line in lines if line[1] != 0]
    try:
        field_problems = line_problems(lines) if lines else {}
        if field_problems:
            raise invalid(field_problems, "The items are invalid")
        resolved = resolve_lines(order, lines) if lines else []
    except ValidationFailed as exc:
        answer["fields"] = exc.details["fields"]
        resolved = []
    if resolved:
        planned = plan(order, resolved)
        amounts, closes, after = planned.amounts, planned.closes, planned.values
        show = (lambda r: r) if can(actor, "view_customer_contact") else mask_email
        recipient = order.customer.email if order.customer else None
        answer.update(
            lines=[line.to_dict() for line in stock_lines(order, resolved)],
            units=sum(quantity for _, quantity in resolved), closes_order=closes,
            refund=money(amounts.refund), refund_cents=amounts.refund,
            refund_split=refund_split(planned.refunds),
            points_restored=amounts.points_restored, points_reversed=amounts.points_reversed,
            totals_after={"subtotal": money(after["subtotal_cents"]),
                          "tax": money(after["tax_cents"]),
                          "discount": money(after["discount_cents"]),
                          "total": money(after["total_cents"])},
            notification=({"channel": "email", "template": "order_partial_cancelled",
                           "recipient": show(recipient)} if notify and recipient else None))
    answer["ok"] = not (problems or blockers or answer["fields"]) and bool(resolved)
    db.session.rollback()  # nothing was written; make sure nothing is
    return answer


__all__ = ["PartialCancelRequest", "PartialOutcome",
           "cancel_items", "perform_partial_cancel", "submit_items", "preview_items",
           "resolve_lines", "line_problems", "run_job_payload"]
