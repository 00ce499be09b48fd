"""One writer for what a cancellation does.

A bulk batch of N orders (the set-based path, `batch.cancel_together`) writes exactly the rows of
the same N orders cancelled one at a time (`service.cancel_order`), over generated order shapes:
items, quantities, prices, paid or not, tender, discount, points, a product without a stock row,
and partial cancellations before. And nothing but the writer (`cancellation/effects.py`) sets an
order to cancelled or inserts a refund.
"""
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

ROOT = Path(__file__).resolve().parent.parent
PRODUCTS = 3  # the last one has no stock row in the store: inventory reconciliation

line = st.tuples(st.integers(0, PRODUCTS - 1), st.integers(1, 4), st.integers(0, 4000))
shape = st.fixed_dictionaries({
    "lines": st.lists(line, min_size=1, max_size=4),
    "paid": st.sampled_from(["no", "full", "part"]),
    # None: an order paid before payments were recorded (one refund in its method); "a+b": two
    # payments, half each (store credit needs a customer: cash instead without one).
    "tender": st.sampled_from(["card", "cash", "debit", None, "cash+card",
                               "store_credit+debit"]),
    "customer": st.booleans(),
    "points_earned": st.integers(0, 300),
    "points_redeemed": st.integers(0, 300),
    "discount": st.integers(0, 800),
    "partial_first": st.integers(0, 3),  # units of the first line cancelled beforehand
    "notify": st.booleans(),
})


def _make_order(db, models, store_id, product_ids, shape, tag):
    customer_id = None
    if shape["customer"]:
        customer = models.Customer(name=f"C {tag}", email=f"c-{tag}@example.com",
                                   phone="+1 555 0100", loyalty_points=1000)
        db.session.add(customer)
        db.session.flush()
        customer_id = customer.id
    subtotal = sum(quantity * price for _p, quantity, price in shape["lines"])
    discount = min(shape["discount"], subtotal)
    tax = subtotal // 10
    total = subtotal + tax - discount
    paid = {"no": 0, "full": total, "part": total // 2}[shape["paid"]]
    tenders = (shape["tender"] or "card").split("+")
    if customer_id is None:
        tenders = ["cash" if t == "store_credit" else t for t in tenders]
    order = models.Order(
        number=f"W-{tag}", store_id=store_id, customer_id=customer_id, status="pending",
        subtotal_cents=subtotal, tax_cents=tax, discount_cents=discount, total_cents=total,
        paid_cents=paid, payment_status="paid" if paid else "unpaid",
        payment_method=tenders[0] if paid else None,
        points_earned=shape["points_earned"], points_redeemed=shape["points_redeemed"])
    if paid and shape["tender"] is not None:
        first = paid // len(tenders)
        for n, tender in enumerate(tenders):
            order.payments.append(models.Payment(
                tender=tender, amount_cents=first if n == 0 else paid - first * (len(tenders) - 1)))
    for product, quantity, price in shape["lines"]:
        order.items.append(models.OrderItem(product_id=product_ids[product], quantity=quantity,
                                            unit_price_cents=price))
    db.session.add(order)
    db.session.flush()
    return order.id


def _written(db, models, order_id, product_index):
    """What the order's cancellations wrote, ids, numbers and times left out."""
    order = db.session.get(models.Order, order_id)
    number = order.number
    cancellations = db.session.scalars(db.select(models.Cancellation).where(
        models.Cancellation.order_id == order_id).order_by(models.Cancellation.id)).all()
    ids = {c.id: n for n, c in enumerate(cancellations)}

    def normal(snapshot):
        if snapshot is None:
            return None
        snapshot = dict(snapshot)
        snapshot["open_items"] = sorted(snapshot.get("open_items", {}).values())
        if "items" in snapshot:
            snapshot["items"] = sorted(line["quantity"] for line in snapshot["items"])
        for key in ("cancellation_id", "notification_id"):
            if key in snapshot:
                snapshot[key] = snapshot[key] is not None
        return snapshot

    events = db.session.scalars(db.select(models.AuditEvent).where(
        models.AuditEvent.order_id == order_id,
        models.AuditEvent.action.like("order.%")).order_by(models.AuditEvent.seq)).all()
    return {
        "order": (order.status, order.previous_status, order.subtotal_cents, order.tax_cents,
                  order.discount_cents, order.total_cents, order.paid_cents,
                  order.refunded_cents, order.payment_status, order.version,
                  order.cancelled_at is not None),
        "payments": [(p.tender, p.amount_cents, p.refunded_cents) for p in order.payments],
        "store_credit": (db.session.get(models.Customer, order.customer_id).store_credit_cents
                         if order.customer_id else None),
        "items": sorted((product_index[i.product_id], i.quantity, i.cancelled_quantity,
                         i.unit_price_cents) for i in order.items),
        "cancellations": [(c.kind, c.reason, c.notes, c.previous_status, c.refund_cents,
                           c.points_restored, c.points_reversed, c.notify_customer,
                           c.order_version, c.flag_inventory_reconciliation, c.actor_id,
                           c.source, sorted((product_index[line.product_id], line.quantity,
                                             line.stock_returned) for line in c.items))
                          for c in cancellations],
        "loyalty": sorted((ids[e.cancellation_id], e.points, e.kind, e.note.replace(number, "N"))
                          for e in db.session.scalars(db.select(models.LoyaltyEntry).where(
                              models.LoyaltyEntry.order_id == order_id))),
        "balance": (db.session.get(models.Customer, order.customer_id).loyalty_points
                    if order.customer_id else None),
        # (Not their status: a worker of the session may be delivering them already.)
        "refunds": sorted((ids[r.cancellation_id], r.amount_cents, r.method,
                           r.payment.tender if r.payment else None,
                           r.idempotency_key == (
                               f"refund-cancellation-{r.cancellation_id}-payment-{r.payment_id}"
                               if r.payment_id else f"refund-cancellation-{r.cancellation_id}"))
                          for r in db.session.scalars(db.select(models.Refund).where(
                              models.Refund.order_id == order_id))),
        "notifications": sorted(
            (ids[n.cancellation_id], n.channel, n.template,
             n.recipient == (order.customer.email if order.customer else None),
             n.idempotency_key == f"notify-cancellation-{n.cancellation_id}")
            for n in db.session.scalars(db.select(models.Notification).where(
                models.Notification.order_id == order_id))),
        "audit": [(e.action, e.actor_id, normal(e.before), normal(e.after)) for e in events],
    }


def _stock(db, models, store_id, product_index):
    return {product_index[s.product_id]: (s.on_hand, s.reserved)
            for s in db.session.scalars(db.select(models.StockLevel).where(
                models.StockLevel.store_id == store_id))}


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
@settings(max_examples=15, deadline=None, derandomize=True,
          phases=(Phase.explicit, Phase.reuse, Phase.generate),  # a failure prints as found
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(shapes=st.lists(shape, min_size=1, max_size=4))
def test_a_batch_writes_exactly_what_single_cancels_write(app, factory, shapes):
    import models
    from cancellation import batch, partial, service
    from cancellation.audit import AuditContext
    from cancellation.partial import PartialCancelRequest
    from models import db

    # Two stores alike: one for the singles, one for the batch, so each one's stock shows
    # exactly what its own cancellations returned.
    stores = [factory.store(), factory.store()]
    products = [factory.product() for _ in range(PRODUCTS)]
    product_index = {product_id: n for n, product_id in enumerate(products)}
    for store_id in stores:
        for product_id in products[:-1]:
            factory.stock(store_id, product_id, on_hand=100, reserved=60)
    actor_id = factory.user("admin")
    context = AuditContext(source="bulk")
    request = service.CancelRequest(reason="inventory_issues", notes="supplier recall")

    with app.app_context():
        actor = db.session.get(models.User, actor_id)
        twins = []
        for n, shape_ in enumerate(shapes):
            tag = factory._unique()
            twins.append(tuple(_make_order(db, models, store_id, products, shape_,
                                           f"{tag}-{n}-{side}")
                               for side, store_id in enumerate(stores)))
        db.session.commit()
        # The same history on both twins: some units of the first line cancelled before.
        for shape_, pair in zip(shapes, twins, strict=True):
            first_quantity = shape_["lines"][0][1]
            units = min(shape_["partial_first"], first_quantity)
            if not units or (len(shape_["lines"]) == 1 and units == first_quantity):
                continue
            for order_id in pair:
                item_id = db.session.get(models.Order, order_id).items[0].id
                partial.cancel_items(order_id, actor, PartialCancelRequest(
                    reason="operational_request", notes="one less",
                    notify_customer=shape_["notify"], lines=[(item_id, units)]), context)

        for shape_, (single, _together) in zip(shapes, twins, strict=True):
            outcome = service.cancel_order(single, actor, service.CancelRequest(
                reason=request.reason, notes=request.notes,
                notify_customer=shape_["notify"]), context)
            assert outcome.cancellation_id is not None

        # The batch: one transaction, set-based, for every order of it (no fallback). Its
        # request has one notify_customer for all: compare the orders that agree with it.
        for notify in (True, False):
            ids = [together for shape_, (_s, together) in zip(shapes, twins, strict=True)
                   if shape_["notify"] == notify]
            if not ids:
                continue
            # Dispatched just now, as bulk.dispatch leaves a job: a live worker's watchdog
            # would take the items of one never dispatched.
            job = models.BulkJob(user_id=actor.id, reason=request.reason, notes=request.notes,
                                 notify_customer=notify, total=len(ids), status="running",
                                 dispatched_at=models.utcnow())
            db.session.add(job)
            db.session.flush()
            items = [models.BulkJobItem(job_id=job.id, order_id=order_id) for order_id in ids]
            db.session.add_all(items)
            db.session.commit()
            result = batch.cancel_together(
                [item.id for item in items], actor, service.CancelRequest(
                    reason=request.reason, notes=request.notes, notify_customer=notify),
                context, file_approval=None)
            db.session.commit()
            assert (result.succeeded, result.failed, result.skipped) == (len(ids), 0, 0)

        db.session.expire_all()
        for single, together in twins:
            assert _written(db, models, together, product_index) == \
                _written(db, models, single, product_index)
        assert _stock(db, models, stores[1], product_index) == \
            _stock(db, models, stores[0], product_index)


# The plan works out the order's columns after (status included); effects writes them.
WRITER = ("cancellation/plan.py", "cancellation/effects.py")
# Writing `status = cancelled` on an order, or a Refund row, in any form.
CANCELS = re.compile(r"status\s*=\s*(OrderStatus\.CANCELLED\.value|CANCELLED|[\"']cancelled[\"'])"
                     r"|status=.*CANCELLED|insert\(Refund\)|(?<![\w.])Refund\(")


def test_nothing_but_the_writer_cancels_an_order_or_queues_a_refund():
    offenders = []
    for folder in ("app.py", "cancellation", "blueprints", "tasks", "commands", "models"):
        path = ROOT / folder
        for file in ([path] if path.is_file() else sorted(path.rglob("*.py"))):
            relative = file.relative_to(ROOT).as_posix()
            if relative in WRITER:
                continue
            for number, text in enumerate(file.read_text().splitlines(), 1):
                code = text.split("#", 1)[0]
                if (CANCELS.search(code) and "==" not in code and "!=" not in code
                        and not code.lstrip().startswith("class ")):
                    offenders.append(f"{relative}:{number}: {text.strip()}")
    assert offenders == []
