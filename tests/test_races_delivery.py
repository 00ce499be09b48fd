"""Deliveries under real concurrency: two workers claiming one outbox row, a retry clicked twice
at once (API and panel), a notice resent twice at once, a stale claim finishing after the row
was taken over. Whatever the interleaving, the gateway pays once and a notice goes out once."""
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select

from cancellation.adapters import DeliveryError
from models import AuditEvent, Cancellation, MailMessage, Notification, Refund, User, db, utcnow

from conftest import bearer, cancel, wait_for
from helpers import answer, chain_ok, count, in_app, processor_payouts, race


class CountingGateway:
    """The gateway as a network party: each call counted, each taking a while; `fail_first`
    calls are declined (after `hold`, if given, is set)."""

    def __init__(self, delay=0.3, fail_first=0, hold=None):
        self.calls, self.delay, self.fail_first, self.hold = [], delay, fail_first, hold
        self.lock = threading.Lock()

    def refund(self, *, idempotency_key, amount_cents, order_number, tender=None,
               payment_reference=None, attempt=1):
        with self.lock:
            self.calls.append(idempotency_key)
            failing = len(self.calls) <= self.fail_first
        if failing and self.hold is not None:
            assert self.hold.wait(30)
        time.sleep(self.delay)
        if failing:
            raise DeliveryError("declined (test)")
        return f"ref-{idempotency_key}"

    def send(self, *, idempotency_key, recipient, subject, body):
        with self.lock:
            self.calls.append(idempotency_key)
        time.sleep(self.delay)


def refund_row(app, factory, status="pending", attempts=0, **columns):
    shop = factory.shop(role="admin", status="cancelled")
    with app.app_context():
        refund = Refund(order_id=shop["order_id"], amount_cents=700, method="card",
                        status=status, attempts=attempts,
                        idempotency_key=f"refund-race-{factory._unique()}", **columns)
        db.session.add(refund)
        db.session.commit()
        return shop, refund.id


def events(app, action, target_id):
    return count(app, AuditEvent, AuditEvent.action == action,
                 AuditEvent.target_id == str(target_id))


# --- workers: two claims of one row ---------------------------------------------------------

def test_two_workers_claiming_one_refund_pay_it_once(app, factory, monkeypatch):
    from cancellation import outbox

    gateway = CountingGateway()
    monkeypatch.setitem(app.extensions, "payment_gateway", gateway)
    _shop, refund_id = refund_row(app, factory)

    results = race(in_app(app, outbox.deliver_refund, refund_id),
                   in_app(app, outbox.deliver_refund, refund_id))

    assert sorted(results) == ["nothing_to_do", "succeeded"], results
    assert len(gateway.calls) == 1
    with app.app_context():
        refund = db.session.get(Refund, refund_id)
        assert (refund.status, refund.attempts) == ("succeeded", 1)
    assert events(app, "refund.succeeded", refund_id) == 1
    chain_ok(app)


def test_two_workers_claiming_one_notice_send_it_once(app, factory, monkeypatch):
    from cancellation import outbox

    notifier = CountingGateway()
    monkeypatch.setitem(app.extensions, "notifier", notifier)
    shop = factory.shop(role="admin", status="cancelled")
    with app.app_context():
        notice = Notification(order_id=shop["order_id"], recipient="someone@example.com",
                              idempotency_key=f"notify-race-{factory._unique()}")
        db.session.add(notice)
        db.session.commit()
        notice_id = notice.id

    results = race(in_app(app, outbox.deliver_notification, notice_id),
                   in_app(app, outbox.deliver_notification, notice_id))

    assert sorted(results) == ["nothing_to_do", "succeeded"], results
    assert len(notifier.calls) == 1
    assert events(app, "notification.sent", notice_id) == 1
    chain_ok(app)


def test_a_stale_claim_finishing_late_leaves_the_takeover_outcome(app, factory, monkeypatch):
    """Worker A claims and hangs at the gateway; its claim goes stale, B takes the row over and
    pays; then A's call comes back declined. A must not mark the paid refund failed (was: it
    overwrote `succeeded` with `failed` and flagged the order for a manual refund)."""
    from cancellation import outbox

    hold = threading.Event()
    gateway = CountingGateway(delay=0, fail_first=1, hold=hold)
    monkeypatch.setitem(app.extensions, "payment_gateway", gateway)
    _shop, refund_id = refund_row(app, factory)
    first = []
    worker_a = threading.Thread(target=lambda: first.append(
        in_app(app, outbox.deliver_refund, refund_id)()))
    worker_a.start()
    wait_for(lambda: gateway.calls, message="worker A at the gateway")
    with app.app_context():  # A's claim is now older than the stale limit
        refund = db.session.get(Refund, refund_id)
        refund.dispatched_at = utcnow() - timedelta(
            seconds=app.config["OUTBOX_STALE_SECONDS"] + 5)
        db.session.commit()
        assert outbox.deliver_refund(refund_id) == "succeeded"  # worker B
    hold.set()
    worker_a.join(timeout=30)

    assert first == ["nothing_to_do"]
    with app.app_context():
        refund = db.session.get(Refund, refund_id)
        assert (refund.status, refund.attempts, refund.last_error) == ("succeeded", 2, None)
    assert events(app, "refund.succeeded", refund_id) == 1
    assert events(app, "refund.failed", refund_id) == 0
    chain_ok(app)


# --- people: retry clicked twice at once ----------------------------------------------------

def failed_for_good(app, factory):
    """A cancelled order whose refund failed its last automatic attempt."""
    return refund_row(app, factory, status="failed",
                      attempts=app.config["DELIVERY_MAX_ATTEMPTS"], last_error="declined",
                      dispatched_at=utcnow() - timedelta(minutes=5))


def test_refund_retry_fired_twice_at_once_is_requested_once_and_pays_once(app, factory,
                                                                          worker):
    """POST /api/v1/orders/:id/refund twice at once: one retry (the other click finds it done
    or answers 409 delivery_claimed), one delivery, one payout. Was: both clicks put the row
    back in the queue, each with its audit event and its task."""
    shop, refund_id = failed_for_good(app, factory)

    def click():
        return answer(app.test_client().post(f"/api/v1/orders/{shop['order_id']}/refund",
                                             headers=bearer(shop["token"])))

    results = race(click, click)

    assert (202, None) in results, results
    assert set(results) <= {(202, None), (409, "delivery_claimed")}, results
    assert events(app, "refund.retry_requested", refund_id) == 1
    with app.app_context():
        key = db.session.get(Refund, refund_id).idempotency_key

    def paid():
        with app.app_context():
            return db.session.get(Refund, refund_id).status == "succeeded"

    wait_for(paid, message="the retried refund to be paid")
    time.sleep(1)  # any second task would have run by now
    with app.app_context():
        refund = db.session.get(Refund, refund_id)
        assert refund.attempts == app.config["DELIVERY_MAX_ATTEMPTS"] + 1
    assert len(processor_payouts(app, [key])) == 1
    assert events(app, "refund.succeeded", refund_id) == 1
    chain_ok(app)


def test_panel_refund_retry_in_two_tabs_is_requested_once(app, auth, factory):
    shop, refund_id = failed_for_good(app, factory)
    page = f"/orders/{shop['order_id']}"
    tabs = []
    for _ in range(2):
        tab = auth(shop["user_id"], client=app.test_client())
        tabs.append((tab.client, tab.csrf(page)))

    def click(tab, csrf):
        return lambda: tab.post(f"/orders/{shop['order_id']}/refunds/{refund_id}/retry",
                                data={"csrf_token": csrf})

    results = race(*(click(tab, csrf) for tab, csrf in tabs))

    assert [r.status_code for r in results] == [302, 302]
    assert events(app, "refund.retry_requested", refund_id) == 1
    with app.app_context():
        assert db.session.get(Refund, refund_id).status in ("pending", "processing", "succeeded")
    chain_ok(app)


def test_a_retry_read_before_a_reinstatement_voided_the_refund_changes_nothing(app, factory,
                                                                               monkeypatch):
    """The click read `failed`; the order was reinstated and the refund voided before its
    write. The voided refund stays voided and unpaid (was: put back to pending, then paid)."""
    from sqlalchemy import update

    from cancellation import outbox
    from cancellation.audit import AuditContext
    from cancellation.errors import DeliveryClaimed

    shop, refund_id = failed_for_good(app, factory)
    real_get = db.session.get

    def get_then_void(model, ident, *args, **kwargs):
        row = real_get(model, ident, *args, **kwargs)
        if model is Refund and ident == refund_id:  # the reinstatement commits now
            with db.engine.connect() as other:
                other.execute(update(Refund).where(Refund.id == refund_id)
                              .values(status="voided"))
                other.commit()
        return row

    with app.app_context():
        actor = real_get(User, shop["user_id"])
        monkeypatch.setattr(db.session, "get", get_then_void)
        try:
            outbox.retry(Refund, refund_id, actor, AuditContext(source="test"))
        except DeliveryClaimed as exc:
            assert exc.status == 409
        else:
            raise AssertionError("the retry of a voided refund went through")
        monkeypatch.undo()
        assert real_get(Refund, refund_id).status == "voided"
    assert events(app, "refund.retry_requested", refund_id) == 0


def test_notice_resent_twice_at_once_goes_out_once(app, client, factory, worker):
    """POST /api/v1/notifications/customer twice at once, the first notice long sent: one new
    notice (the other request 409 delivery_claimed, or finds it on its way). Was: a 500 from
    the duplicate idempotency key, or a second retry of the new notice."""
    shop = factory.shop(role="admin")
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200
    order_id = shop["order_id"]

    def sent():
        with app.app_context():
            return db.session.scalar(select(Notification.status).where(
                Notification.order_id == order_id)) == "succeeded"

    wait_for(sent, message="the cancellation notice to go out")

    def click():
        return answer(app.test_client().post("/api/v1/notifications/customer",
                                             json={"order_id": order_id},
                                             headers=bearer(shop["token"])))

    results = race(click, click)

    assert (202, None) in results, results
    assert set(results) <= {(202, None), (409, "delivery_claimed")}, results
    assert count(app, Notification, Notification.order_id == order_id) == 2
    assert count(app, AuditEvent, AuditEvent.order_id == order_id,
                 AuditEvent.action == "notification.resend_requested") == 1
    assert count(app, AuditEvent, AuditEvent.order_id == order_id,
                 AuditEvent.action == "notification.retry_requested") == 0

    def both_sent():
        with app.app_context():
            return set(db.session.scalars(select(Notification.status).where(
                Notification.order_id == order_id))) == {"succeeded"}

    wait_for(both_sent, message="the resent notice to go out")
    with app.app_context():
        keys = db.session.scalars(select(Notification.idempotency_key).where(
            Notification.order_id == order_id)).all()
        assert db.session.scalar(select(func.count()).select_from(MailMessage).where(
            MailMessage.idempotency_key.in_(keys))) == 2
        assert db.session.scalar(select(func.count()).select_from(Cancellation).where(
            Cancellation.order_id == order_id)) == 1
    chain_ok(app)
