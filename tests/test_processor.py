"""The payment processor adapter against the sandbox processor, over a real socket: declines,
errors, answers lost before and after the payout, slow answers, idempotency keys, signatures,
a restart of the processor — and never a second payout. Then a cancellation paid end to end."""
import threading
import time
import uuid

import pytest
import requests

from conftest import SandboxProcessor, bearer, cancel, free_port, wait_for

READ_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A sandbox of this module's own: the session worker, still settling other modules'
    deliveries, must not take the failures these tests inject."""
    running = SandboxProcessor(tmp_path_factory.mktemp("own-processor")).start()
    yield running
    running.stop()


@pytest.fixture
def control(own):
    from sandbox_processor.control import SandboxControl

    control = SandboxControl(own.url, own.key)
    yield control
    control.reset()


@pytest.fixture
def gateway(own):
    from cancellation.processor import ProcessorClient

    return ProcessorClient(own.url, own.key, connect_timeout=2.0, read_timeout=READ_TIMEOUT)


def new_key():
    return f"refund-test-{uuid.uuid4().hex}"


def refund(gateway, key, amount_cents=1500, attempt=1, tender="card"):
    return gateway.refund(idempotency_key=key, amount_cents=amount_cents, order_number="T-1",
                         tender=tender, payment_reference="pi_test", attempt=attempt)


def test_a_refund_is_paid_once_and_its_id_returned(gateway, control):
    key = new_key()
    paid = refund(gateway, key, amount_cents=8800)
    assert paid.startswith("re_")
    [row] = control.refunds(key)
    assert (row["id"], row["amount_cents"], row["tender"], row["currency"], row["order_number"],
            row["payment_reference"]) == (paid, 8800, "card", "USD", "T-1", "pi_test")


def test_a_decline_raises_declined_and_pays_nothing(gateway, control):
    from cancellation.adapters import DeliveryError
    from cancellation.processor import Declined

    assert issubclass(Declined, DeliveryError)
    control.set("decline")
    key = new_key()
    with pytest.raises(Declined, match="Card issuer declined the refund"):
        refund(gateway, key)
    assert control.refunds(key) == []
    assert control.behaviour()["mode"] == "normal"  # one call declined, as asked


def test_a_server_error_pays_nothing_and_a_later_call_pays_once(gateway, control):
    from cancellation.processor import Declined, DeliveryError

    control.set("error")
    key = new_key()
    with pytest.raises(DeliveryError, match="503") as raised:
        refund(gateway, key)
    assert not isinstance(raised.value, Declined)
    assert control.refunds(key) == []
    paid = refund(gateway, key, attempt=2)
    assert [row["id"] for row in control.refunds(key)] == [paid]


def test_a_timeout_before_the_payout_pays_nothing_and_the_retry_pays_once(gateway, control):
    from cancellation.processor import DeliveryError

    control.set("timeout_before_commit", delay_s=READ_TIMEOUT + 1)
    key = new_key()
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="outcome unknown"):
        refund(gateway, key)
    assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 1
    time.sleep(started + READ_TIMEOUT + 1.3 - time.monotonic())  # the sandbox has answered 503
    assert control.refunds(key) == []
    paid = refund(gateway, key, attempt=2)
    assert [row["id"] for row in control.refunds(key)] == [paid]


def test_a_timeout_after_the_payout_finds_it_and_never_pays_twice(gateway, control):
    control.set("timeout_after_commit", delay_s=READ_TIMEOUT + 1.5)
    key = new_key()
    started = time.monotonic()
    paid = refund(gateway, key)  # the read timeout fires; the key is looked up and found
    elapsed = time.monotonic() - started
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 1.5, elapsed
    assert [row["id"] for row in control.refunds(key)] == [paid]

    # A retry after the lost answer looks the key up first and sends nothing: a decline waiting
    # for the next POST is still there after it.
    control.set("decline", times=1)
    assert refund(gateway, key, attempt=2) == paid
    assert control.behaviour() == {"mode": "decline", "times": 1, "delay_s": 3.0}
    time.sleep(started + READ_TIMEOUT + 1.8 - time.monotonic())  # the first answer went out
    assert [row["id"] for row in control.refunds(key)] == [paid]


def test_a_slow_answer_within_the_timeout_succeeds(gateway, control):
    control.set("slow", delay_s=0.6)
    key = new_key()
    started = time.monotonic()
    paid = refund(gateway, key)
    assert 0.6 <= time.monotonic() - started < READ_TIMEOUT
    assert [row["id"] for row in control.refunds(key)] == [paid]


def test_the_same_key_twice_pays_once(gateway, control):
    key = new_key()
    first = refund(gateway, key)
    assert refund(gateway, key) == first
    assert [row["id"] for row in control.refunds(key)] == [first]


def test_the_same_key_sent_at_once_by_eight_callers_pays_once(gateway, control):
    key = new_key()
    barrier, ids = threading.Barrier(8), []

    def call():
        barrier.wait()
        ids.append(refund(gateway, key))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(ids) == 8 and len(set(ids)) == 1, ids
    assert [row["id"] for row in control.refunds(key)] == ids[:1]


def test_a_key_reused_with_another_amount_is_refused(gateway, control):
    from cancellation.processor import DeliveryError

    key = new_key()
    first = refund(gateway, key, amount_cents=1500)
    with pytest.raises(DeliveryError, match="another request under this idempotency key"):
        refund(gateway, key, amount_cents=1600)
    assert [(row["id"], row["amount_cents"]) for row in control.refunds(key)] == [(first, 1500)]


def test_a_wrong_key_or_a_stale_timestamp_is_refused_401(own, control):
    from cancellation.processor import DeliveryError, ProcessorClient, signature

    key = new_key()
    wrong = ProcessorClient(own.url, "not-the-key", read_timeout=READ_TIMEOUT)
    with pytest.raises(DeliveryError, match="401"):
        refund(wrong, key)
    body = b'{"amount_cents":100,"currency":"USD","tender":"card","order_number":"T-1"}'
    for timestamp, secret in ((int(time.time()), "not-the-key"),
                              (int(time.time()) - 301, own.key), (None, own.key)):
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        if timestamp is not None:
            headers.update({"X-Processor-Timestamp": str(timestamp),
                            "X-Processor-Signature": "v1=" + signature(
                                secret, timestamp, "POST", "/v1/refunds", body)})
        answer = requests.post(f"{own.url}/v1/refunds", data=body, headers=headers, timeout=5)
        assert (answer.status_code, answer.json()) == (401, {"error": "invalid_signature"})
    assert control.refunds(key) == []
    # Signed right, the same request is paid: the refusals were the signature's doing.
    timestamp = int(time.time())
    answer = requests.post(f"{own.url}/v1/refunds", data=body, timeout=5, headers={
        "Idempotency-Key": key, "Content-Type": "application/json",
        "X-Processor-Timestamp": str(timestamp),
        "X-Processor-Signature": "v1=" + signature(own.key, timestamp, "POST", "/v1/refunds",
                                                   body)})
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "succeeded"


def test_the_control_endpoints_need_the_sandbox_key(own):
    assert requests.get(f"{own.url}/_sandbox/behaviour", timeout=5).status_code == 401
    assert requests.get(f"{own.url}/_sandbox/ledger", timeout=5).status_code == 401
    assert requests.post(f"{own.url}/_sandbox/behaviour", json={"mode": "decline"},
                         timeout=5).status_code == 401
    assert requests.get(f"{own.url}/_sandbox/healthz", timeout=5).status_code == 200


def test_an_invalid_request_is_refused_400(own, control):
    from cancellation.processor import DeliveryError, ProcessorClient

    client = ProcessorClient(own.url, own.key)
    with pytest.raises(DeliveryError, match="400.*tender"):
        refund(client, new_key(), tender="cash")
    with pytest.raises(DeliveryError, match="400.*amount_cents"):
        refund(client, new_key(), amount_cents=0)
    with pytest.raises(DeliveryError, match="400.*Idempotency-Key"):
        refund(client, "k" * 81)


def test_a_processor_not_listening_is_not_reached(own):
    from cancellation.processor import DeliveryError, ProcessorClient

    nobody = ProcessorClient(f"http://127.0.0.1:{free_port()}", own.key)
    with pytest.raises(DeliveryError, match="not reached; nothing was sent"):
        refund(nobody, new_key())


def test_charges_have_the_same_contract(gateway, control):
    key = f"charge-test-{uuid.uuid4().hex}"
    charged = gateway.charge(idempotency_key=key, amount_cents=4200, order_number="T-2",
                            tender="debit")
    assert charged.startswith("ch_")
    assert gateway.charge(idempotency_key=key, amount_cents=4200, order_number="T-2",
                         tender="debit", attempt=2) == charged
    ledger = control.ledger(idempotency_key=key)
    assert ledger["refunds"] == [] and [row["id"] for row in ledger["charges"]] == [charged]


def test_the_ledger_survives_a_restart_of_the_processor(tmp_path):
    from cancellation.processor import ProcessorClient
    from sandbox_processor.control import SandboxControl

    sandbox = SandboxProcessor(tmp_path).start()
    try:
        gateway = ProcessorClient(sandbox.url, sandbox.key, read_timeout=READ_TIMEOUT)
        key = new_key()
        paid = refund(gateway, key)
        sandbox.stop()
        sandbox.start()  # same port, same ledger file
        control = SandboxControl(sandbox.url, sandbox.key)
        control.set("decline", times=-1)  # any POST now would be declined
        assert refund(gateway, key, attempt=2) == paid
        assert [row["id"] for row in control.refunds(key)] == [paid]
    finally:
        sandbox.stop()


# --- end to end: a cancellation's refund paid by the sandbox, through the worker -------------

def test_a_cancelled_paid_order_is_refunded_by_the_processor(app, factory, worker, sandbox):
    from models import Refund, db

    api = app.test_client()
    shop = factory.shop(role="admin", quantity=2, price_cents=4000)  # 80.00 + 8.00 tax
    response = cancel(api, shop["order_id"], shop["token"])
    assert response.status_code == 200, response.json

    def paid():
        order = api.get(f"/api/v1/orders/{shop['order_id']}", headers=bearer(shop["token"])).json
        return order if order["refunds"] and all(
            r["status"] == "succeeded" for r in order["refunds"]) else None

    order = wait_for(paid, message="the refund paid by the processor")
    with app.app_context():
        refunds = db.session.scalars(db.select(Refund).where(
            Refund.order_id == shop["order_id"])).all()
        keys = {r.idempotency_key: (r.gateway_reference, r.amount_cents) for r in refunds}
    assert sum(amount for _, amount in keys.values()) == 8800
    for key, (reference, amount) in keys.items():
        [row] = sandbox.refunds(key)
        assert (row["id"], row["amount_cents"]) == (reference, amount)
    assert {r["gateway_reference"] for r in order["refunds"]} == {
        reference for reference, _ in keys.values()}
    time.sleep(1.5)  # a sweep runs every second: it must not pay again
    assert all(len(sandbox.refunds(key)) == 1 for key in keys)
