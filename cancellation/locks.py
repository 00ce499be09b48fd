"""Reading orders for a cancellation: the rows locked, and the facts a plan needs besides them.

Every cancellation locks in one order — the orders (by id), then, when it writes, the stock rows
(by store and product), the customers (by id) and the audit chain head last — so that no two
cancellations, single or bulk, ever wait for each other in a circle.
"""
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import joinedload, selectinload

from cancellation.plan import NOTHING_SETTLED, Settled, plan_cancel
from models import Cancellation, Order, OrderItem, StockLevel, db, utcnow


def lock_order(order_id):
    """The order row, locked until commit (SQLite serialises writers anyway).

    FOR NO KEY UPDATE, not FOR UPDATE: we never change an order's key, and the weaker lock
    still lets other transactions insert rows that reference the order (their foreign-key check
    takes KEY SHARE), which FOR UPDATE would block — a deadlock with any transaction that holds
    such a row's parent and then waits for this order."""
    return db.session.scalar(
        select(Order).where(Order.id == order_id)
        .options(joinedload(Order.customer), joinedload(Order.store))  # read in the same trip
        .with_for_update(key_share=True, of=Order)
        .execution_options(populate_existing=True))


def lock_orders(order_ids):
    """{id: order} with items and customer, each row locked as `lock_order` locks one, in id
    order."""
    orders = db.session.scalars(
        select(Order).where(Order.id.in_(list(order_ids)))
        .options(selectinload(Order.items), selectinload(Order.payments),
                 joinedload(Order.customer))
        .order_by(Order.id)
        .with_for_update(key_share=True, of=Order)
        .execution_options(populate_existing=True)).unique().all()
    return {order.id: order for order in orders}


def refresh_items(order):
    """Read the order's items again under its row lock: every writer of an item locks the
    order first, so what is read now is what the cancellation may rely on."""
    db.session.scalars(select(OrderItem).where(OrderItem.order_id == order.id)
                       .execution_options(populate_existing=True)).all()


def settled(orders):
    """{order id: Settled} — what the orders' earlier cancellations (not reinstated) settled:
    points restored and reversed, and the value they took off the totals. One query for the
    orders that had anything cancelled; an order with nothing cancelled yet had none."""
    ids = [order.id for order in orders
           if any(item.cancelled_quantity for item in order.items)]
    if not ids:
        return {}
    sums = [func.coalesce(func.sum(getattr(Cancellation, name)), 0) for name in Settled._fields]
    return {order_id: Settled(*map(int, values)) for order_id, *values in db.session.execute(
        select(Cancellation.order_id, *sums)
        .where(Cancellation.order_id.in_(ids), Cancellation.reinstated_at.is_(None))
        .group_by(Cancellation.order_id))}


def stocked_products(wanted):
    """{store id: {product ids with a stock row}} for `wanted` [(store id, product id)]. A
    plain read: the rows are locked when the cancellation releases their units."""
    pairs = sorted(set(wanted))
    found = {}
    if not pairs:
        return found
    if len({store_id for store_id, _ in pairs}) == 1:
        store_id = pairs[0][0]
        query = select(StockLevel.store_id, StockLevel.product_id).where(
            StockLevel.store_id == store_id,
            StockLevel.product_id.in_([product_id for _, product_id in pairs]))
    else:
        query = select(StockLevel.store_id, StockLevel.product_id).where(
            tuple_(StockLevel.store_id, StockLevel.product_id).in_(pairs))
    for store_id, product_id in db.session.execute(query):
        found.setdefault(store_id, set()).add(product_id)
    return found


def plans_for(entries, now=None):
    """[Plan] for `entries` [(order, request, lines or None for every open quantity)], the
    orders read under their locks. Reads what the plans need besides the orders — the points
    earlier cancellations settled, which products have a stock row — in two queries at most."""
    now = now or utcnow()
    orders = [order for order, _request, _lines in entries]
    earlier = settled(orders)
    wanted = [(order.store_id, item.product_id) for order, _request, lines in entries
              for item in (order.items if lines is None else [item for item, _ in lines])]
    stocked = stocked_products(wanted)
    return [plan_cancel(order, request, now, lines=lines,
                        settled=earlier.get(order.id, NOTHING_SETTLED),
                        stocked=stocked.get(order.store_id, frozenset()))
            for order, request, lines in entries]
