"""Cancelling a bulk job's batch of orders together: the set-based sibling of
`service.perform_full_cancel`.

A bulk batch of a hundred orders done one order per transaction costs a hundred commits and
some twenty statements per order. Here the whole batch is one transaction: the items are
claimed, the orders locked and checked with the same `evaluate_cancel`, and each table's rows
are written with one statement (or one executemany) for all orders. The rows written are exactly
those `perform_full_cancel` writes for each order (tests/test_bulk.py compares them).

All or nothing: when the database refuses anything (a constraint, a trigger, a deadlock), the
caller rolls the batch back and cancels its orders one transaction each instead, so one bad order
never fails the others (cancellation/bulk.py `run_batch`).

Locks are taken in the order the single cancel takes them — orders, stock rows (by store and
product), customers (by id), the audit chain head last — so a batch and a single cancel never
deadlock.
"""
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import bindparam, case, func, insert, select, tuple_, update
from sqlalchemy.orm import joinedload, selectinload

from models import (
    ApprovalRequest, BulkJobItem, Cancellation, CancellationItem, Customer, DeliveryStatus, LoyaltyEntry,
    LoyaltyKind, Notification, Order, OrderItem, OrderStatus, PaymentStatus, Refund, StockLevel,
    db, money, utcnow,
)
from models.bulk import BulkItemStatus

from cancellation import approvals
from cancellation.audit import record_many
from cancellation.errors import CancelDeskError, InvalidState
from cancellation.policy import evaluate_cancel

PENDING, SUCCEEDED, FAILED = (BulkItemStatus.PENDING.value, BulkItemStatus.SUCCEEDED.value,
                              BulkItemStatus.FAILED.value)
CANCELLED = OrderStatus.CANCELLED.value


@dataclass
class BatchResult:
    """What a batch did: item counts, and the cancellations it wrote."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: list = field(default_factory=list)  # (cancellation id, store id)


@dataclass
class _Plan:
    """One order's cancellation, worked out before anything is written."""

    item_id: int
    order: Order
    lines: list  # (order item, quantity)
    refund_cents: int
    points_restored: int
    points_reversed: int
    payment_status: str
    stock_returned: dict = field(default_factory=dict)  # product id -> bool
    cancellation_id: int | None = None
    notification_id: int | None = None


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
    orders = _lock_orders(claimed.values())
    now = utcnow()
    plans, failures, to_approve = [], [], []
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
            plans.append(_plan(item_id, order))
    _settle_points(plans)
    if plans:
        _write_cancellations(plans, actor, request, context, now)
        # The rows other transactions update too — stock, customers, the audit head — come
        # last, in a single cancel's order, so that the batch holds their locks only for the
        # last few statements before its commit (the other process's batch waits on them).
        _release_stock(plans)
        _move_balances(plans)
    # Approval requests append to the audit chain: after the stock and customer locks, as in a
    # single cancel, so that the head stays the last lock taken — the actor's open requests on
    # these orders (a new one may replace one) are locked before the first of them takes it.
    _lock_open_requests(actor, [order.id for _item, order, _why in to_approve])
    for item_id, order, why in to_approve:
        approval = file_approval(order, why)
        failures.append((item_id, InvalidState(
            f"Needs approval ({'; '.join(why)}): approval request #{approval.id} was filed "
            "for it.", code="approval_required")))
    if plans:
        _audit(plans, actor, request, context)
    _finish_items(plans, failures, utcnow())  # the watchdog reads progress from this time
    result.succeeded, result.failed = len(plans), len(failures)
    result.cancelled = [(plan.cancellation_id, plan.order.store_id) for plan in plans]
    return result


def _lock_open_requests(actor, order_ids):
    if order_ids:
        db.session.execute(
            select(ApprovalRequest.id).where(ApprovalRequest.order_id.in_(order_ids),
                                             ApprovalRequest.requested_by_id == actor.id,
                                             ApprovalRequest.status.in_(approvals.OPEN))
            .order_by(ApprovalRequest.id).with_for_update()).all()


def _lock_orders(order_ids):
    """{id: order} with items and customer, rows locked as `load_order_for_update` locks one."""
    orders = db.session.scalars(
        select(Order).where(Order.id.in_(list(order_ids)))
        .options(selectinload(Order.items), joinedload(Order.customer))
        .order_by(Order.id)
        .with_for_update(key_share=True, of=Order)
        .execution_options(populate_existing=True)).unique().all()
    return {order.id: order for order in orders}


def _plan(item_id, order):
    refund = order.refundable_cents
    payment_status = order.payment_status
    if refund > 0:  # as service.allocate_refund books it
        payment_status = (PaymentStatus.REFUNDED.value
                          if order.refunded_cents + refund >= order.paid_cents
                          else PaymentStatus.PARTIALLY_REFUNDED.value)
    lines = [(item, item.open_quantity) for item in order.items if item.open_quantity > 0]
    return _Plan(item_id=item_id, order=order, lines=lines, refund_cents=refund,
                 points_restored=0, points_reversed=0, payment_status=payment_status)


def _settle_points(plans):
    """Points still to give back or take back: what earlier (partial) cancellations of each
    order have not settled yet — `impact.points_settled` for the whole batch in one query."""
    with_points = [plan for plan in plans if plan.order.customer_id
                   and (plan.order.points_redeemed or plan.order.points_earned)]
    if not with_points:
        return
    settled = {order_id: (int(restored), int(reversed_)) for order_id, restored, reversed_ in
               db.session.execute(
                   select(Cancellation.order_id, func.sum(Cancellation.points_restored),
                          func.sum(Cancellation.points_reversed))
                   .where(Cancellation.order_id.in_([p.order.id for p in with_points]),
                          Cancellation.reinstated_at.is_(None))
                   .group_by(Cancellation.order_id))}
    for plan in with_points:
        restored, reversed_ = settled.get(plan.order.id, (0, 0))
        plan.points_restored = max(plan.order.points_redeemed - restored, 0)
        plan.points_reversed = max(plan.order.points_earned - reversed_, 0)


def _write_cancellations(plans, actor, request, context, now):
    orders = [plan.order for plan in plans]
    # One UPDATE for the batch (its rows are locked already): per-order values by id.
    table = Order.__table__
    db.session.execute(
        update(table).where(table.c.id.in_([order.id for order in orders]))
        .values(previous_status=table.c.status, status=CANCELLED, cancelled_at=now,
                updated_at=now, version=table.c.version + 1,
                refunded_cents=_by_id(table.c.id, {
                    plan.order.id: plan.order.refunded_cents + max(plan.refund_cents, 0)
                    for plan in plans}),
                payment_status=_by_id(table.c.id, {
                    plan.order.id: plan.payment_status for plan in plans})))
    db.session.execute(
        update(OrderItem).where(OrderItem.order_id.in_([order.id for order in orders]))
        .values(cancelled_quantity=OrderItem.quantity)
        .execution_options(synchronize_session=False))
    _find_stock_rows(plans)
    cancellation_ids = db.session.scalars(
        insert(Cancellation).returning(Cancellation.id, sort_by_parameter_order=True),
        [{"order_id": plan.order.id, "kind": "full", "reason": request.reason,
          "notes": request.notes, "request_contact": request.request_contact,
          "request_channel": request.request_channel, "requested_at": request.requested_at,
          "actor_id": actor.id, "source": context.source, "previous_status": plan.order.status,
          "notify_customer": request.notify_customer, "order_version": plan.order.version + 1,
          "refund_cents": max(plan.refund_cents, 0), "points_restored": plan.points_restored,
          "points_reversed": plan.points_reversed, "created_at": now,
          "flag_inventory_reconciliation": not all(plan.stock_returned.values())}
         for plan in plans]).all()
    for plan, cancellation_id in zip(plans, cancellation_ids, strict=True):
        plan.cancellation_id = cancellation_id
    lines = [{"cancellation_id": plan.cancellation_id, "order_item_id": item.id,
              "product_id": item.product_id, "quantity": quantity,
              "stock_returned": plan.stock_returned[item.product_id]}
             for plan in plans  # in product order, as service.return_stock adds them
             for item, quantity in sorted(plan.lines, key=lambda line: line[0].product_id)]
    if lines:
        db.session.execute(insert(CancellationItem), lines)
    _restore_points(plans, now)
    _queue_outbox(plans, request, now)


def _stock_wanted(plans):
    """{(store id, product id): units to release}, in (store, product) order."""
    wanted = defaultdict(int)
    for plan in plans:
        for item, quantity in plan.lines:
            wanted[plan.order.store_id, item.product_id] += quantity
    return dict(sorted(wanted.items()))


def _find_stock_rows(plans):
    """Which lines have a stock row to go back to; a line without one is recorded as not
    returned (the cancellation is flagged for inventory reconciliation)."""
    wanted = _stock_wanted(plans)
    stocked = set(db.session.execute(
        select(StockLevel.store_id, StockLevel.product_id)
        .where(tuple_(StockLevel.store_id, StockLevel.product_id).in_(list(wanted)))).all()
    ) if wanted else set()
    for plan in plans:
        plan.stock_returned = {item.product_id: (plan.order.store_id, item.product_id) in stocked
                               for item, _quantity in plan.lines}


def _release_stock(plans):
    """Release the cancelled quantities: one UPDATE per stock row, in (store, product) order."""
    returned = {(plan.order.store_id, product_id) for plan in plans
                for product_id, found in plan.stock_returned.items() if found}
    releases = [{"b_store": store_id, "b_product": product_id, "b_quantity": quantity}
                for (store_id, product_id), quantity in _stock_wanted(plans).items()
                if (store_id, product_id) in returned]
    if releases:
        table = StockLevel.__table__
        db.session.execute(
            update(table).where(table.c.store_id == bindparam("b_store"),
                                table.c.product_id == bindparam("b_product"))
            .values(reserved=table.c.reserved - bindparam("b_quantity")), releases)


def _restore_points(plans, now):
    """As service.restore_loyalty_points: an entry per kind (the balances move in
    `_move_balances`)."""
    entries = []
    for plan in plans:
        order = plan.order
        if order.customer_id is None:
            continue
        if plan.points_restored:
            entries.append({"customer_id": order.customer_id, "order_id": order.id,
                            "cancellation_id": plan.cancellation_id,
                            "points": plan.points_restored, "kind": LoyaltyKind.RESTORED.value,
                            "note": f"Redeemed on {order.number}, order cancelled",
                            "created_at": now})
        if plan.points_reversed:
            entries.append({"customer_id": order.customer_id, "order_id": order.id,
                            "cancellation_id": plan.cancellation_id,
                            "points": -plan.points_reversed, "kind": LoyaltyKind.REVERSED.value,
                            "note": f"Earned on {order.number}, order cancelled",
                            "created_at": now})
    if entries:
        db.session.execute(insert(LoyaltyEntry), entries)


def _move_balances(plans):
    """Each customer's points balance, once per customer, in id order."""
    balances = defaultdict(int)
    for plan in plans:
        if plan.order.customer_id is not None:
            balances[plan.order.customer_id] += plan.points_restored - plan.points_reversed
    moves = [{"b_id": customer_id, "b_delta": delta}
             for customer_id, delta in sorted(balances.items()) if delta]
    if moves:
        table = Customer.__table__
        db.session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(loyalty_points=table.c.loyalty_points + bindparam("b_delta")), moves)


def _queue_outbox(plans, request, now):
    """The refund and the customer notice of each cancellation, as service.queue_refund and
    queue_notification write them; delivered by the workers after commit."""
    pending = DeliveryStatus.PENDING.value
    refunds = [{"order_id": plan.order.id, "cancellation_id": plan.cancellation_id,
                "amount_cents": plan.refund_cents, "method": plan.order.payment_method,
                "idempotency_key": f"refund-cancellation-{plan.cancellation_id}",
                "status": pending, "attempts": 0, "created_at": now, "updated_at": now}
               for plan in plans if plan.refund_cents > 0]
    if refunds:
        db.session.execute(insert(Refund), refunds)
    if not request.notify_customer:
        return
    notification_ids = db.session.scalars(
        insert(Notification).returning(Notification.id, sort_by_parameter_order=True),
        [{"order_id": plan.order.id, "cancellation_id": plan.cancellation_id,
          "channel": "email", "template": "order_full_cancelled",
          "recipient": plan.order.customer.email if plan.order.customer else None,
          "idempotency_key": f"notify-cancellation-{plan.cancellation_id}",
          "status": pending, "attempts": 0, "created_at": now, "updated_at": now}
         for plan in plans]).all()
    for plan, notification_id in zip(plans, notification_ids, strict=True):
        plan.notification_id = notification_id


def _audit(plans, actor, request, context):
    """One `order.cancelled` event per order, with the before and after a single cancel
    records (service.order_snapshot), appended to the chain together."""
    events = []
    for plan in plans:
        order = plan.order
        before = {"status": order.status, "version": order.version,
                  "total": money(order.total_cents), "payment_status": order.payment_status,
                  "open_items": {str(item.id): item.open_quantity for item in order.items}}
        after = {"status": CANCELLED, "version": order.version + 1,
                 "total": money(order.total_cents), "payment_status": plan.payment_status,
                 "open_items": {str(item.id): 0 for item in order.items},
                 "cancellation_id": plan.cancellation_id, "reason": request.reason,
                 "notes": request.notes,
                 "refund": money(plan.refund_cents) if plan.refund_cents > 0 else None,
                 "notification_id": plan.notification_id,
                 "inventory_reconciliation": not all(plan.stock_returned.values())}
        events.append({"target_id": order.id, "store_id": order.store_id,
                       "order_id": order.id, "before": before, "after": after})
    record_many(actor, "order.cancelled", events, target_type="order", context=context)


def _by_id(column, values):
    """CASE column WHEN id THEN value ...: one statement sets a different value per row."""
    return case(values, value=column)


def _finish_items(plans, failures, now):
    """Each item's outcome, in the batch's transaction: progress is what has been committed."""
    table = BulkJobItem.__table__
    if plans:
        db.session.execute(
            update(table).where(table.c.id.in_([plan.item_id for plan in plans]))
            .values(status=SUCCEEDED, finished_at=now, cancellation_id=_by_id(
                table.c.id, {plan.item_id: plan.cancellation_id for plan in plans})))
    if failures:
        db.session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(status=FAILED, finished_at=now, error_code=bindparam("b_code"),
                    error_message=bindparam("b_message")),
            [{"b_id": item_id, "b_code": exc.code, "b_message": exc.message}
             for item_id, exc in failures])
