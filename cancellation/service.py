"""Cancelling an order: one transaction, order row locked, every effect written together.

Every entry point (panel, API v1, API v2, bulk and approval tasks) cancels through `perform`:
the order locked (`locks`), the cancellation worked out (`plan`) and written (`effects`) — the
only code that sets an order to cancelled or queues a refund for a cancellation.
"""
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.orm.exc import StaleDataError

from cancellation import effects, maintenance, oversight, switch
from cancellation.audit import AuditContext, record
from cancellation.errors import ConcurrentModification, InvalidState, NotFound, ValidationFailed
from cancellation.locks import lock_order, plans_for
from cancellation.policy import evaluate_cancel, require_visible
from cancellation.reasons import REASON_CODES, REQUEST_CHANNELS, CancellationReason
from cancellation.transactions import commit_keeping
from models import (
    ApprovalRequest,
    Cancellation,
    CancellationItem,
    Order,
    StockLevel,
    db,
    isoformat,
    utcnow,
)
from models.order import CANCELLABLE_STATUSES

log = logging.getLogger(__name__)

SCOPES = ("this_instance", "all_future")
REFUND_TO = ("original", "store_credit")


@dataclass
class CancelRequest:
    """What the user asked for. Validated here so every entry point gets the same rules."""

    reason: str
    notes: str | None = None
    notify_customer: bool = True
    expected_version: int | None = None
    request_contact: str | None = None
    request_channel: str | None = None
    requested_at: datetime | None = None
    scope: str = "this_instance"
    # "store_credit": the customer agreed to take the refund as store credit, for this reason.
    refund_to: str = "original"
    refund_to_reason: str | None = None

    def validate(self):
        problems = {}
        if self.refund_to not in REFUND_TO:
            problems["refund_to"] = f"must be one of: {', '.join(REFUND_TO)}"
        elif self.refund_to == "store_credit":
            reason = (self.refund_to_reason or "").strip()
            if not reason:
                problems["refund_to_reason"] = (
                    "say why the refund goes to store credit (the customer's agreement)")
            elif len(reason) > 500 or "\x00" in reason:
                problems["refund_to_reason"] = "must be at most 500 characters, without NUL"
        if self.reason not in REASON_CODES:
            problems["reason"] = f"must be one of: {', '.join(REASON_CODES)}"
        if self.notes is not None and len(self.notes) > 2000:
            problems["notes"] = "must be at most 2000 characters"
        for name in ("notes", "request_contact"):
            if "\x00" in (getattr(self, name) or ""):  # PostgreSQL cannot store it
                problems[name] = "must not contain NUL (0x00) characters"
        if self.scope not in SCOPES:
            problems["scope"] = f"must be one of: {', '.join(SCOPES)}"
        if self.reason == CancellationReason.CUSTOMER_REQUESTED.value:
            if not (self.request_contact or "").strip():
                problems["customer_request.contact"] = (
                    "customer contact details are required for customer-requested cancellations")
            if self.requested_at is None:
                problems["customer_request.requested_at"] = (
                    "the time of the customer's request is required")
            elif self.requested_at > utcnow():
                problems["customer_request.requested_at"] = "cannot be in the future"
            if self.request_channel is not None and self.request_channel not in REQUEST_CHANNELS:
                problems["customer_request.channel"] = (
                    f"must be one of: {', '.join(REQUEST_CHANNELS)}")
        if problems:
            raise ValidationFailed(
                "The cancellation request is invalid: " + "; ".join(
                    f"{name}: {message}" for name, message in problems.items()),
                details={"fields": [{"field": name, "message": message}
                                    for name, message in problems.items()]})
        return self

    def to_payload(self):
        return {
            "reason": self.reason, "notes": self.notes, "notify_customer": self.notify_customer,
            "request_contact": self.request_contact, "request_channel": self.request_channel,
            "requested_at": self.requested_at.isoformat() if self.requested_at else None,
            "scope": self.scope,
            **({"refund_to": self.refund_to, "refund_to_reason": self.refund_to_reason}
               if self.refund_to != "original" else {}),
        }

    @classmethod
    def from_payload(cls, payload):
        data = dict(payload)
        if data.get("requested_at"):
            data["requested_at"] = datetime.fromisoformat(data["requested_at"])
        return cls(**data)


@dataclass
class CancelOutcome:
    """Either the cancellation performed, or the approval request filed instead."""

    order: Order | None
    cancellation_id: int | None = None
    approval_request: ApprovalRequest | None = None
    job: object = None  # the CancelJob: queued for after maintenance, or started for a worker
    also_cancelled: list = field(default_factory=list)
    also_pending_approval: list = field(default_factory=list)
    # Later instances of the series that could not be cancelled: dicts of order_id, number,
    # code and message (a blocker, a state that changed, a permission).
    also_failed: list = field(default_factory=list)

    @property
    def needs_approval(self):
        return self.approval_request is not None

    @property
    def queued(self):
        """Held for after maintenance (the job waits, `queued`)."""
        return self.job is not None and self.job.status == maintenance.QUEUED

    @property
    def cancellation(self):
        """The cancellation performed (read when asked for), or None."""
        if self.cancellation_id is None:
            return None
        return db.session.get(Cancellation, self.cancellation_id)


def submit(order_id, actor, request, context, *, wait=True):
    """The one entry of a request to cancel a whole order — the panel's, API v1's and v2's.

    The outcome answers which it was: cancelled now (`cancellation_id`), an approval request
    filed instead (`needs_approval`), held until maintenance ends (`queued`, with the job), or —
    `wait=False`, API v2's asynchronous cancel — a CancelJob started for a worker (`job`).
    Raises a CancelDeskError (nothing changed) when the request cannot be taken.
    """
    if maintenance.is_on():
        return CancelOutcome(order=None, job=maintenance.queue_cancel(order_id, actor, request,
                                                                       context))
    if not wait:
        from cancellation import jobs  # a use case of this layer that cancels through this one

        return CancelOutcome(order=None, job=jobs.submit_cancel(order_id, actor, request,
                                                                context))
    return cancel_order(order_id, actor, request, context)


def cancel_order(order_id, actor, request, context=None):
    """Cancel an order fully, or file an approval request when policy requires one.

    Commits on success and dispatches the outbox rows to the workers; raises a CancelDeskError
    (and leaves nothing changed) otherwise.
    """
    request.validate()
    context = context or AuditContext()
    try:
        order = lock_order(order_id)
        decision = evaluate_cancel(actor, order, reason=request.reason,
                                   expected_version=request.expected_version)
        if decision.needs_approval:
            # The approver performs this order's cancellation only; the later instances of an
            # all_future request are handled below, each on its own.
            approval = file_approval_request(order, actor, replace(request,
                                                                   scope="this_instance"),
                                             decision.why, context)
            db.session.commit()
            outcome = CancelOutcome(order=order, approval_request=approval)
        else:
            plan = perform(order, actor, request, context)
            # The order was locked and written here: the after-commit step reads it as it is
            # instead of loading it again.
            kept = (order, *order.items, actor)
            commit_keeping(*kept)
            outcome = None
    except StaleDataError:
        db.session.rollback()
        current = db.session.get(Order, order_id)
        raise ConcurrentModification(current.version if current else None) from None
    except Exception:
        db.session.rollback()
        raise
    if outcome is None:
        # The writer left the order and its items as committed (and marked what it changed
        # behind them — the customer, the cancellations — to be read again): the answer reads
        # them as they are.
        after_commit(actor, order.store_id, context, keep=kept)
        outcome = CancelOutcome(order=order, cancellation_id=plan.cancellation_id)
    if request.scope == "all_future" and order.series_id:
        cancel_future_in_series(order, actor, request, context, outcome)
    return outcome


def after_commit(actor, store_id, context, keep=()):
    """What follows every committed cancellation, whichever path performed it (a direct cancel,
    an approval, a job): the actor's cancelling is checked for unusual patterns (a flag only;
    it never blocks). (Its refund and notice went to the workers with the commit.)"""
    oversight.after_cancellations(actor, store_id, context, keep)


def later_in_series(order):
    """select() of the ids of the later, still-cancellable orders of the order's series — what
    scope all_future cancels besides the order itself."""
    return (select(Order.id).where(Order.series_id == order.series_id,
                                   Order.placed_at > order.placed_at,
                                   Order.status.in_(CANCELLABLE_STATUSES))
            .order_by(Order.placed_at, Order.id))


def later_in_series_counts(orders):
    """{order id: how many later instances all_future would cancel} for the orders of a page
    that belong to a series, in one query."""
    ids = [o.id for o in orders if o.series_id]
    if not ids:
        return {}
    later = aliased(Order)
    rows = db.session.execute(
        select(Order.id, func.count(later.id)).join(later, and_(
            later.series_id == Order.series_id, later.placed_at > Order.placed_at,
            later.status.in_(CANCELLABLE_STATUSES)))
        .where(Order.id.in_(ids)).group_by(Order.id)).all()
    return {**dict.fromkeys(ids, 0), **dict(rows)}


def cancel_future_in_series(order, actor, request, context, outcome):
    """Cancel every later, still-cancellable order of the recurring series, each on its own,
    and record on `outcome` which were cancelled, sent for approval, or could not be."""
    later_ids = db.session.scalars(later_in_series(order)).all()
    single = replace(request, scope="this_instance", expected_version=None)
    for later_id in later_ids:
        try:
            result = cancel_order(later_id, actor, single, context)
        except NotFound:
            continue  # not the actor's to see: not theirs to hear about either
        except Exception as exc:  # one blocked instance never stops the rest
            log.info("series %s: order %s not cancelled: %s", order.series_id, later_id, exc)
            number = db.session.scalar(select(Order.number).where(Order.id == later_id))
            outcome.also_failed.append({
                "order_id": later_id, "number": number, "code": getattr(exc, "code", "error"),
                "message": getattr(exc, "message", "It could not be cancelled.")})
            continue
        # An instance this actor may not cancel directly got an approval request instead.
        (outcome.also_pending_approval if result.needs_approval
         else outcome.also_cancelled).append(result)
    return outcome


def perform(order, actor, request, context, lines=None):
    """Cancel `lines` ([(item, quantity)], checked already) of the locked `order` — every open
    quantity when None — inside the caller's transaction; the caller commits. Returns the Plan
    written (its `cancellation_id` is the new cancellation's)."""
    # While maintenance is on, cancellations are queued (maintenance.queue_cancel); whatever
    # still reaches this point (an approval decision, a job already in flight) is refused.
    switch.refuse_while_on(switch.CANCELLING_PAUSED)
    if request.refund_to == "store_credit" and order.customer_id is None:
        raise ValidationFailed(
            "The order has no customer to give store credit to; refund it the way it was paid.",
            details={"fields": [{"field": "refund_to",
                                 "message": "store credit needs a customer on the order"}]})
    [plan] = effects.write(plans_for([(order, request, lines)]), actor, context)
    return plan


def file_approval_request(order, actor, request, why, context, justification=None):
    from cancellation import approvals

    # A repeated request (a double click, a client retry) joins the requester's open one
    # instead of queueing the same decision twice for the approvers — unless the order changed
    # since, which makes the open one stale.
    pending = db.session.scalar(select(ApprovalRequest).where(
        ApprovalRequest.order_id == order.id, ApprovalRequest.requested_by_id == actor.id,
        ApprovalRequest.status.in_(approvals.OPEN)))
    if pending is not None:
        # A partial request for other items is another decision: it replaces the open one.
        same_items = pending.payload.get("items") == request.to_payload().get("items")
        if pending.order_version == order.version and same_items:
            return pending
        approvals._mark_stale(pending, approvals.stale_reason(pending, order) or (
            "Replaced by a newer request of the same requester for other items."), actor,
            context)
    approval = ApprovalRequest(order_id=order.id, requested_by_id=actor.id,
                               justification=justification, payload=request.to_payload(),
                               why=why, order_version=order.version, created_at=utcnow())
    db.session.add(approval)
    db.session.flush()
    approvals.on_filed(approval)  # expiry, and routing to the approvers after commit
    record(actor, "approval.requested", target_type="approval_request", target_id=approval.id,
           store_id=order.store_id, order_id=order.id,
           after={"why": why, "payload": approval.payload, "justification": justification,
                  "expires_at": isoformat(approval.expires_at)},
           context=context)
    return approval


def get_visible_order(user, order_id):
    """The order if the user may see it, else NotFound (another store's order looks absent)."""
    return require_visible(user, db.session.get(Order, order_id))


def return_unreturned_stock(order, actor, context):
    """Manual reconciliation: put the lines a cancellation could not return back on the shelf.

    Lines whose stock row was missing are counted back as on-hand units (creating the row);
    a line already returned is never returned twice.
    """
    order = lock_order(order.id)
    if not order.cancellations:
        raise InvalidState(f"Order {order.number} has no cancelled items to return.")
    returned = []
    for cancellation in order.cancellations:
        for line in cancellation.items:
            # Claim the line in one conditional UPDATE: of two concurrent calls (a double
            # click) exactly one flips it and puts the units back.
            claimed = not line.stock_returned and db.session.execute(
                update(CancellationItem)
                .where(CancellationItem.id == line.id, CancellationItem.stock_returned.is_(False))
                .values(stock_returned=True)
                .execution_options(synchronize_session=False)).rowcount
            if not claimed:
                continue
            stock = db.session.scalar(select(StockLevel).where(
                StockLevel.store_id == order.store_id,
                StockLevel.product_id == line.product_id).with_for_update())
            if stock is None:
                stock = StockLevel(store_id=order.store_id, product_id=line.product_id,
                                   on_hand=0, reserved=0)
                db.session.add(stock)
            stock.on_hand += line.quantity
            returned.append({"product_id": line.product_id, "quantity": line.quantity})
        cancellation.flag_inventory_reconciliation = False
    if returned:
        record(actor, "inventory.returned", target_type="order", target_id=order.id,
               order_id=order.id, store_id=order.store_id, after={"lines": returned},
               context=context)
    db.session.commit()
    return returned
