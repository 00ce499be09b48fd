"""Cancelling a bulk job's batch of orders together, in one transaction.

A bulk batch of a hundred orders done one order per transaction costs a hundred commits. Here
the whole batch is one transaction: the items are claimed, the orders locked (`locks`) and
checked with the same `evaluate_cancel`, and the cancellations planned and written for all
orders at once by the one writer (`plan` → `effects`), each table with one statement — exactly
the rows the same orders cancelled one at a time get (tests/test_one_writer.py compares them).

All or nothing: when the database refuses anything (a constraint, a trigger, a deadlock), the
caller rolls the batch back and cancels its orders one transaction each instead, so one bad order
never fails the others (cancellation/bulk.py `run_batch`).
"""
from dataclasses import dataclass, field

from sqlalchemy import bindparam, case, select, update

from cancellation import approvals, effects
from cancellation.errors import CancelDeskError, InvalidState
from cancellation.locks import lock_orders, plans_for
from cancellation.policy import evaluate_cancel
from models import ApprovalRequest, BulkJobItem, db, utcnow
from models.bulk import BulkItemStatus

PENDING, SUCCEEDED, FAILED = (BulkItemStatus.PENDING.value, BulkItemStatus.SUCCEEDED.value,
                              BulkItemStatus.FAILED.value)


@dataclass
class BatchResult:
    """What a batch did: item counts, and the cancellations it wrote."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: list = field(default_factory=list)  # (cancellation id, store id)


def cancel_together(item_ids, actor, request, context, file_approval):
    """Claim, check and cancel the pending items of `item_ids` in the caller's transaction.

    Business failures (another store's order, a billing hold, one that needs approval — for
    which `file_approval(order, why)` files the request) are recorded on their items. Raises
    SQLAlchemyError when the database refuses something; the caller rolls back. Does not commit.
    """
    result = BatchResult()
    claimed = dict(db.session.execute(
        update(BulkJobItem).where(BulkJobItem.id.in_(item_ids), BulkJobItem.status == PENDING)
        .values(attempts=BulkJobItem.attempts + 1)
        .returning(BulkJobItem.id, BulkJobItem.order_id)
        .execution_options(synchronize_session=False)).all())
    result.skipped = len(item_ids) - len(claimed)
    if not claimed:
        return result
    orders = lock_orders(claimed.values())
    cancelling, failures, to_approve = [], [], []
    for item_id in sorted(claimed):
        order = orders.get(claimed[item_id])
        try:
            decision = evaluate_cancel(actor, order, reason=request.reason)
        except CancelDeskError as exc:
            failures.append((item_id, exc))
            continue
        if decision.needs_approval:
            to_approve.append((item_id, order, decision.why))
        else:
            cancelling.append((item_id, order))

    def file_approvals():
        # Approval requests append to the audit chain: after the stock and customer locks, as
        # in a single cancel, so that the head stays the last lock taken — the actor's open
        # requests on these orders (a new one may replace one) are locked before the first of
        # them takes it.
        _lock_open_requests(actor, [order.id for _item, order, _why in to_approve])
        for item_id, order, why in to_approve:
            approval = file_approval(order, why)
            failures.append((item_id, InvalidState(
                f"Needs approval ({'; '.join(why)}): approval request #{approval.id} was filed "
                "for it.", code="approval_required")))

    plans = plans_for([(order, request, None) for _item, order in cancelling])
    effects.write(plans, actor, context, before_audit=file_approvals)
    done = [(item_id, plan) for (item_id, _order), plan in zip(cancelling, plans, strict=True)]
    _finish_items(done, failures, utcnow())  # the watchdog reads progress from this time
    result.succeeded, result.failed = len(done), len(failures)
    result.cancelled = [(plan.cancellation_id, plan.store_id) for plan in plans]
    return result


def _lock_open_requests(actor, order_ids):
    if order_ids:
        db.session.execute(
            select(ApprovalRequest.id).where(ApprovalRequest.order_id.in_(order_ids),
                                             ApprovalRequest.requested_by_id == actor.id,
                                             ApprovalRequest.status.in_(approvals.OPEN))
            .order_by(ApprovalRequest.id).with_for_update()).all()


def _finish_items(done, failures, now):
    """Each item's outcome, in the batch's transaction: progress is what has been committed."""
    table = BulkJobItem.__table__
    if done:
        db.session.execute(
            update(table).where(table.c.id.in_([item_id for item_id, _plan in done]))
            .values(status=SUCCEEDED, finished_at=now, cancellation_id=case(
                {item_id: plan.cancellation_id for item_id, plan in done}, value=table.c.id)))
    if failures:
        db.session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(status=FAILED, finished_at=now, error_code=bindparam("b_code"),
                    error_message=bindparam("b_message")),
            [{"b_id": item_id, "b_code": exc.code, "b_message": exc.message}
             for item_id, exc in failures])
