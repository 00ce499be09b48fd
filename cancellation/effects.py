"""The only code that writes a cancellation: `write` puts 1 or N plans in the database.

Orders, their items, the cancellation rows and their lines, stock, loyalty entries and balances,
the refund and customer-notice outbox rows and the audit events — each table with one statement
(or one executemany) for all the plans, inside the caller's transaction. The caller has locked
the orders (`locks.lock_order` / `lock_orders`) and worked out the plans (`locks.plans_for`); it
commits. After the commit the outbox rows go to the workers (`transactions.after_commit`).

Locks are taken in the order every cancellation takes them — orders (the caller), stock rows (by
store and product), customers (by id), the audit chain head last — and the rows other
transactions update too come last, so a batch holds their locks only for its last statements.

The order UPDATE is a compare-and-set on each order's version: an order changed since it was
read (possible on SQLite, whose SELECT takes no lock) makes the whole write fail with
ConcurrentModification before anything else is written.
"""
from collections import defaultdict
from itertools import groupby

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm.attributes import set_committed_value

from cancellation import outbox
from cancellation.audit import record_each
from cancellation.errors import ConcurrentModification
from cancellation.plan import STORE_CREDIT
from cancellation.transactions import after_commit
from models import (
    PROCESSOR_TENDERS,
    Cancellation,
    CancellationItem,
    Customer,
    DeliveryStatus,
    LoyaltyEntry,
    Notification,
    Order,
    OrderItem,
    Payment,
    Refund,
    StockLevel,
    StoreCreditEntry,
    StoreCreditKind,
    db,
)

ORDER_COLUMNS = ("subtotal_cents", "tax_cents", "discount_cents", "total_cents", "refunded_cents",
                 "balance_due_cents", "payment_status", "updated_at", "version")
CLOSING_COLUMNS = ("status", "previous_status", "cancelled_at")


def write(plans, actor, context, before_audit=None, dispatch=True):
    """Write every effect of `plans` (all by `actor`, from `context`) in the caller's
    transaction; fills in each plan's cancellation, refund and notification ids.

    `before_audit()` runs right before the audit events are appended: what else the caller
    appends to the chain in this transaction (a bulk batch's approval requests), so that the
    chain head stays the last lock taken. `dispatch=False` leaves the outbox rows to the sweep
    (the demo's history, whose deliveries it records itself)."""
    if not plans:
        if before_audit is not None:
            before_audit()
        return plans
    _update_orders(plans)
    _update_items(plans)
    _insert_cancellations(plans, actor, context)
    _insert_lines(plans)
    _insert_loyalty(plans)
    _insert_outbox(plans)
    _update_payments(plans)
    _insert_store_credit(plans)
    _release_stock(plans)
    _move_balances(plans)
    if before_audit is not None:
        before_audit()
    _audit(plans, actor, context)
    _sync_session(plans)
    if dispatch:
        # One task for all the rows: one message, one claim, one settle (outbox.deliver_rows).
        after_commit(outbox.send_rows,
                     [refund_id for p in plans
                      for allocation, refund_id in zip(p.refunds, p.refund_ids, strict=True)
                      if allocation.tender in PROCESSOR_TENDERS],
                     [p.notification_id for p in plans if p.notification_id])
    return plans


def _update_orders(plans):
    """One executemany per shape (closing the order or not), each row only where its version is
    the one planned on."""
    table = Order.__table__
    changed = 0
    for closes, group in groupby(sorted(plans, key=lambda p: (not p.closes, p.order_id)),
                                 key=lambda p: p.closes):
        columns = ORDER_COLUMNS + (CLOSING_COLUMNS if closes else ())
        rows = [{"b_id": plan.order_id, "b_was": plan.version,
                 **{f"b_{name}": value for name, value in plan.values.items()}}
                for plan in group]
        changed += db.session.execute(
            update(table).where(table.c.id == bindparam("b_id"),
                                table.c.version == bindparam("b_was"))
            .values({name: bindparam(f"b_{name}") for name in columns}), rows).rowcount
    if changed != len(plans):
        current = db.session.execute(select(Order.id, Order.version).where(
            Order.id.in_([plan.order_id for plan in plans]))).all()
        versions = dict(current)
        lost = next((p for p in plans if versions.get(p.order_id) != p.version), plans[0])
        raise ConcurrentModification(versions.get(lost.order_id))


def _update_items(plans):
    whole = [plan.order_id for plan in plans if plan.kind == "full"]
    table = OrderItem.__table__
    if whole:  # every open quantity: the set-based form
        db.session.execute(update(table).where(table.c.order_id.in_(whole))
                           .values(cancelled_quantity=table.c.quantity))
    lines = [{"b_id": line.item_id, "b_quantity": line.quantity}
             for plan in plans if plan.kind != "full" for line in plan.lines]
    if lines:
        db.session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(cancelled_quantity=table.c.cancelled_quantity + bindparam("b_quantity")),
            lines)


def _insert_cancellations(plans, actor, context):
    actor_id = getattr(actor, "id", None)
    ids = _insert_ids(
        Cancellation,
        [{"order_id": plan.order_id, "kind": plan.kind, "reason": plan.request.reason,
          "notes": plan.request.notes, "request_contact": plan.request.request_contact,
          "request_channel": plan.request.request_channel,
          "requested_at": plan.request.requested_at, "actor_id": actor_id,
          "source": context.source, "previous_status": plan.previous_status,
          "notify_customer": plan.notifies, "order_version": plan.version + 1,
          "refund_cents": max(plan.refund_cents, 0),
          "refund_to": getattr(plan.request, "refund_to", None) or "original",
          "refund_to_reason": getattr(plan.request, "refund_to_reason", None),
          "balance_cleared_cents": plan.amounts.balance_cleared,
          "subtotal_cents": plan.amounts.subtotal, "tax_cents": plan.amounts.tax,
          "discount_cents": plan.amounts.discount, "total_cents": plan.amounts.total,
          "points_restored": plan.amounts.points_restored if plan.customer_id else 0,
          "points_reversed": plan.amounts.points_reversed if plan.customer_id else 0,
          "created_at": plan.now, "flag_inventory_reconciliation": plan.inventory_reconciliation}
         for plan in plans])
    for plan, cancellation_id in zip(plans, ids, strict=True):
        plan.cancellation_id = cancellation_id


def _insert_lines(plans):
    lines = [{"cancellation_id": plan.cancellation_id, "order_item_id": line.item_id,
              "product_id": line.product_id, "quantity": line.quantity,
              "stock_returned": line.stock_returned}
             for plan in plans for line in plan.lines]
    if lines:
        db.session.execute(insert(CancellationItem.__table__), lines)


def _insert_loyalty(plans):
    entries = [{"customer_id": plan.customer_id, "order_id": plan.order_id,
                "cancellation_id": plan.cancellation_id, "points": points, "kind": kind,
                "note": note, "created_at": plan.now}
               for plan in plans for points, kind, note in plan.loyalty_entries()]
    if entries:
        db.session.execute(insert(LoyaltyEntry.__table__), entries)


def _insert_outbox(plans):
    """The refund and the customer notice of each cancellation, delivered by the workers after
    the commit; each keyed so that no retry pays or sends twice."""
    pending = DeliveryStatus.PENDING.value
    rows = [{"order_id": plan.order_id, "cancellation_id": plan.cancellation_id,
             "payment_id": allocation.payment_id, "amount_cents": allocation.amount,
             "method": allocation.tender,
             "idempotency_key": _refund_key(plan.cancellation_id, allocation.payment_id),
             "status": REFUND_STATUS.get(allocation.tender, pending), "attempts": 0,
             "succeeded_at": plan.now if allocation.tender == STORE_CREDIT else None,
             "created_at": plan.now, "updated_at": plan.now}
            for plan in plans for allocation in plan.refunds]
    if rows:
        ids = iter(_insert_ids(Refund, rows))
        for plan in plans:
            plan.refund_ids = [next(ids) for _ in plan.refunds]
    telling = [plan for plan in plans if plan.notifies]
    if telling:
        ids = _insert_ids(
            Notification,
            [{"order_id": plan.order_id, "cancellation_id": plan.cancellation_id,
              "channel": "email", "template": plan.template, "recipient": plan.recipient,
              "idempotency_key": f"notify-cancellation-{plan.cancellation_id}",
              "status": pending, "attempts": 0, "created_at": plan.now, "updated_at": plan.now}
             for plan in telling])
        for plan, notification_id in zip(telling, ids, strict=True):
            plan.notification_id = notification_id


# How each refund starts, by the tender it goes back in: card and debit wait for a worker to pay
# them through the processor; cash waits at the counter for staff; store credit is given in this
# transaction (`_insert_store_credit`).
REFUND_STATUS = {"cash": DeliveryStatus.AWAITING_PAYOUT.value,
                 STORE_CREDIT: DeliveryStatus.SUCCEEDED.value}


def _refund_key(cancellation_id, payment_id):
    """The refund's idempotency key at the processor: one per cancellation and payment, so no
    retry, redelivery or double click pays it twice."""
    if payment_id is None:
        return f"refund-cancellation-{cancellation_id}"
    return f"refund-cancellation-{cancellation_id}-payment-{payment_id}"


def _update_payments(plans):
    """What goes back of each payment, one executemany in payment id order."""
    moves = sorted((allocation.payment_id, allocation.amount) for plan in plans
                   for allocation in plan.refunds if allocation.payment_id is not None)
    if moves:
        table = Payment.__table__
        db.session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(refunded_cents=table.c.refunded_cents + bindparam("b_cents")),
            [{"b_id": payment_id, "b_cents": cents} for payment_id, cents in moves])


def _insert_store_credit(plans):
    """The refunds given as store credit, as entries of the customers' ledgers (their balances
    move with the points in `_move_balances`)."""
    entries = [{"customer_id": plan.customer_id, "order_id": plan.order_id,
                "cancellation_id": plan.cancellation_id, "refund_id": refund_id,
                "amount_cents": allocation.amount, "kind": StoreCreditKind.REFUND.value,
                "note": f"Refund for {plan.order.number}", "created_at": plan.now}
               for plan in plans
               for allocation, refund_id in zip(plan.refunds, plan.refund_ids, strict=True)
               if allocation.tender == STORE_CREDIT]
    if entries:
        db.session.execute(insert(StoreCreditEntry.__table__), entries)


def _release_stock(plans):
    """The cancelled units back to available stock: one UPDATE per stock row, in (store,
    product) order. Lines without a stock row were recorded as not returned."""
    wanted = defaultdict(int)
    for plan in plans:
        for line in plan.lines:
            if line.stock_returned:
                wanted[plan.store_id, line.product_id] += line.quantity
    if wanted:
        table = StockLevel.__table__
        db.session.execute(
            update(table).where(table.c.store_id == bindparam("b_store"),
                                table.c.product_id == bindparam("b_product"))
            .values(reserved=table.c.reserved - bindparam("b_quantity")),
            [{"b_store": store_id, "b_product": product_id, "b_quantity": quantity}
             for (store_id, product_id), quantity in sorted(wanted.items())])


def _move_balances(plans):
    """Each customer's points and store credit balances, once per customer, in id order."""
    points, credit = defaultdict(int), defaultdict(int)
    for plan in plans:
        if plan.customer_id is not None:
            points[plan.customer_id] += plan.points_delta()
            credit[plan.customer_id] += sum(a.amount for a in plan.refunds
                                            if a.tender == STORE_CREDIT)
    moves = [{"b_id": customer_id, "b_points": points[customer_id],
              "b_credit": credit[customer_id]}
             for customer_id in sorted(points) if points[customer_id] or credit[customer_id]]
    if moves:
        table = Customer.__table__
        db.session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(loyalty_points=table.c.loyalty_points + bindparam("b_points"),
                    store_credit_cents=table.c.store_credit_cents + bindparam("b_credit")),
            moves)


def _audit(plans, actor, context):
    """One event per cancellation, appended to the chain in the plans' order (one INSERT)."""
    record_each(actor, [
        {"action": plan.action, "target_type": "order", "target_id": plan.order_id,
         "store_id": plan.store_id, "order_id": plan.order_id, "before": plan.before,
         "after": plan.after(), "created_at": plan.now}
        for plan in plans], context=context)


def _sync_session(plans):
    """The orders and items in the session hold what was just written (no reload needed);
    their cancellations are read again when next used."""
    session = db.session()
    for plan in plans:
        order = plan.order
        for name, value in plan.values.items():
            set_committed_value(order, name, value)
        for item in order.items:
            set_committed_value(item, "cancelled_quantity",
                                item.quantity - plan.open_after[item.id])
        session.expire(order, ["cancellations", "refunds", "notifications", "payments"])
        if order.customer_id is not None and plan.refunds:
            session.expire(order.customer, ["store_credit_cents"])


def _insert_ids(model, rows):
    """Insert `rows` into the model's table (Core: no ORM bookkeeping per row); the new ids, in
    the order of the rows given.

    On PostgreSQL the ids are drawn from the table's sequence first (one short query) and the
    rows go in as an executemany of one short INSERT, which psycopg pipelines and whose parse it
    caches. An INSERT … VALUES of hundreds of rows with RETURNING — SQLAlchemy's way of answering
    ids in order — is a statement too long for psycopg's cache: parsed afresh on every batch, it
    was a quarter of a bulk batch's time. A few rows (one cancellation's), and SQLite: one
    INSERT … RETURNING."""
    table = model.__table__
    if db.session.get_bind().dialect.name != "postgresql" \
            or len(rows) * len(rows[0]) <= CACHED_PARAMETERS:  # short: one statement does
        return db.session.scalars(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).all()
    ids = sorted(db.session.scalars(_next_ids(table), {"n": len(rows)}).all())
    db.session.execute(insert(table), [{**row, "id": new_id}
                                       for row, new_id in zip(rows, ids, strict=True)])
    return ids


# psycopg caches the parse of a statement of at most this many parameters (and 4 KB).
CACHED_PARAMETERS = 50
_NEXT_IDS = {}


def _next_ids(table):
    """SELECT of :n fresh ids from the table's id sequence (PostgreSQL), built once."""
    built = _NEXT_IDS.get(table.name)
    if built is None:
        built = _NEXT_IDS[table.name] = text(
            f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
            "FROM generate_series(1, :n)")
    return built
