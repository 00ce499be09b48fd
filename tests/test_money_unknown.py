"""A card refund whose outcome is unknown (sent to the processor, the answer lost) must not be
voided by a reinstatement: the processor may pay it a moment later, and the customer would have
the refund AND the order back owing nothing. Whatever the interleaving with the session's
worker (which retries it, looking the key up first), the money paid is either still refunded
or owed again — never paid and voided."""
import time

from sqlalchemy import select

from test_tenders import reinstate, shop

from conftest import cancel, wait_for


def test_a_refund_with_an_unknown_outcome_is_never_voided(app, client, factory, sandbox):
    from cancellation import outbox
    from models import Order, Refund, db

    s = shop(factory, [("card", 2200)])
    # Every attempt is answered 2.5 s after it is recorded: longer than the client waits (1.5 s).
    sandbox.set("slow", times=-1, delay_s=2.5)
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    with app.app_context():
        refund = db.session.scalar(select(Refund).where(Refund.order_id == s["order_id"]))
        refund_id, key = refund.id, refund.idempotency_key
        outbox.deliver_refund(refund_id)  # or the session worker got there first

    def unknown():
        with app.app_context():
            row = db.session.get(Refund, refund_id)
            return row.status == "failed" and row.outcome_unknown

    wait_for(unknown, timeout=15, interval=0.05, message="the refund's answer to be lost")
    response = reinstate(client, s)
    if response.status_code != 200:  # refused while the outcome is unknown
        assert response.status_code == 409, response.json
        codes = [r["code"] for r in response.json["error"]["reasons"]]
        assert codes == ["refund_outcome_unknown"], codes
    sandbox.reset()
    time.sleep(3)  # whatever was sent is recorded by now

    def settled():
        with app.app_context():
            if db.session.get(Refund, refund_id).status == "failed":
                outbox.deliver_refund(refund_id)  # the next attempt: looked up first
            return db.session.get(Refund, refund_id).status in ("succeeded", "voided")

    wait_for(settled, timeout=30, message="the refund's outcome to be known")
    paid = sandbox.refunds(idempotency_key=key)
    with app.app_context():
        order = db.session.get(Order, s["order_id"])
        refund = db.session.get(Refund, refund_id)
        state = (response.status_code, refund.status, order.balance_due_cents, len(paid))
    assert len(paid) <= 1, state
    assert not (paid and refund.status == "voided"), state
    if paid and response.status_code == 200:
        assert order.balance_due_cents == 2200, state
