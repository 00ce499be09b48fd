"""Plain functions shared by test modules: firing competing calls at once, reading rows back,
and set-ups that more than one module makes. Fixtures (`auth` to sign in, `factory`, ...) and
the API callers (`cancel`, `v2_cancel`, ...) are in conftest."""
import threading

from sqlalchemy import func, select

from cancellation import verify_chain
from models import Order, StockLevel, User, db


def race(*calls, timeout=120):
    """Run each zero-argument call in its own thread, all released at once; their results (an
    exception raised is returned in its place)."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a racer never finished"
    return results


def in_app(app, function, *args):
    """`function(*args)` as a worker runs it: in an app context (and a session) of its own."""
    def call():
        with app.app_context():
            return function(*args)
    return call


def count(app, model, *where):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def chain_ok(app):
    with app.app_context():
        report = verify_chain()
    assert report.ok, report


def answer(response):
    """(status code, error code or None): what a user of the API sees."""
    code = None
    if response.status_code >= 400 and response.is_json:
        code = response.json["error"]["code"]
    return response.status_code, code


def email_of(app, user_id):
    with app.app_context():
        return db.session.get(User, user_id).email


def status_of(app, order_id):
    with app.app_context():
        return db.session.get(Order, order_id).status


def reserved(app, store_id, product_id):
    """The stock a store holds reserved for one product."""
    with app.app_context():
        return db.session.scalar(select(StockLevel.reserved).where(
            StockLevel.store_id == store_id, StockLevel.product_id == product_id))


def text_of(response):
    return response.get_data(as_text=True)


def queued_cancels(client, factory, count):
    """In maintenance: `count` one-line orders of a managed store, each cancelled by its manager
    through API v1 and so queued as a cancel job. Returns (the store, order ids, job ids)."""
    from conftest import cancel

    shop = factory.managed_store(on_hand=100)
    orders = [factory.order(shop["store_id"], [(shop["product_id"], 1, 1500)])
              for _ in range(count)]
    job_ids = [cancel(client, order_id, shop["token"]).json["job_id"] for order_id in orders]
    return shop, orders, job_ids


def processor_payouts(app, keys):
    """The sandbox processor's ledger rows (its refunds) for these idempotency keys: what the
    processor actually paid, read over its HTTP control API."""
    from sandbox_processor.control import SandboxControl

    control = SandboxControl(app.config["PAYMENT_PROCESSOR_URL"],
                             app.config["PAYMENT_PROCESSOR_KEY"])
    keys = set(keys)
    return [row for row in control.refunds(prefix="refund-") if row["idempotency_key"] in keys]


def money_state(app, order_id):
    """An order's money as the tests of tenders compare it: status, totals, paid, refunded,
    balance due, payment status and its payments."""
    from models import Order, db

    with app.app_context():
        order = db.session.get(Order, order_id)
        return {"status": order.status, "total": order.total_cents, "paid": order.paid_cents,
                "refunded": order.refunded_cents, "due": order.balance_due_cents,
                "payment_status": order.payment_status,
                "payments": [(p.tender, p.amount_cents, p.refunded_cents)
                             for p in order.payments]}
