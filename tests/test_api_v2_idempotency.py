"""Idempotency keys on v2 POSTs, as payment APIs do them: replay, mismatch (422), in flight
(409), expiry and the purge, no key / bad key (400), keys per user, and eight concurrent requests
with one key running the cancel exactly once."""
import json
import threading
import uuid
from datetime import timedelta

import pytest

from conftest import (
    RUNBOOK_BODY,
    assert_api_error,
    bearer,
    order_state,
    v2_cancel,
    v2_headers,
    v2_wait_cancel,
    wait_for,
)


def count(app, model, **where):
    from models import db

    with app.app_context():
        query = db.select(db.func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return db.session.scalar(query)


def jobs(app, order_id):
    from models import CancelJob

    return count(app, CancelJob, order_id=order_id)


def put_key(app, user_id, key, *, path, body=RUNBOOK_BODY, state="in_progress", age=None,
            expires_in=timedelta(hours=24), response=None):
    """An IdempotencyKey row as a request with this key, path and body would have left it."""
    from cancellation.idempotency import fingerprint
    from models import IdempotencyKey, db, utcnow

    with app.app_context():
        created = utcnow() - (age or timedelta())
        row = IdempotencyKey(user_id=user_id, key=key, method="POST", path=path,
                             fingerprint=fingerprint("POST", path, json.dumps(body).encode()),
                             state=state, created_at=created, expires_at=created + expires_in,
                             response_status=response and response[0],
                             response_body=response and response[1])
        db.session.add(row)
        db.session.commit()
        return row.id


def key_row(app, user_id, key):
    from models import IdempotencyKey, db

    with app.app_context():
        row = db.session.scalar(db.select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key))
        return None if row is None else {"id": row.id, "state": row.state,
                                         "status": row.response_status,
                                         "body": row.response_body}


@pytest.fixture
def ops(factory):
    return factory.shop(role="ops_engineer")


def cancel_path(order_id):
    return f"/api/v2/orders/{order_id}/cancel"


# --- Replay -----------------------------------------------------------------------------------

def test_same_key_same_body_replays_the_stored_answer(app, client, ops, worker):
    from models import Cancellation

    key = str(uuid.uuid4())
    first = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    # The same JSON, formatted and ordered differently, is the same request.
    raw = json.dumps(dict(reversed(list(RUNBOOK_BODY.items()))), indent=2)
    for _attempt in range(3):
        again = client.post(cancel_path(ops["order_id"]), data=raw,
                            content_type="application/json",
                            headers=v2_headers(ops["token"], key=key))
        assert again.status_code == 202
        assert again.json == first.json
        assert again.headers["Idempotent-Replayed"] == "true"
    assert v2_wait_cancel(client, ops["order_id"], ops["token"])["status"] == "completed"
    # Replayed after completion too: the stored answer, not the current state.
    late = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert (late.status_code, late.json) == (202, first.json)
    assert late.json["status"] == "processing"
    assert jobs(app, ops["order_id"]) == 1
    assert count(app, Cancellation, order_id=ops["order_id"]) == 1


def test_replay_of_a_stored_error(app, client, factory):
    shop = factory.shop(role="ops_engineer", status="completed")
    key = str(uuid.uuid4())
    first = v2_cancel(client, shop["order_id"], shop["token"], key=key)
    assert_api_error(first, 400, "invalid_state")
    again = v2_cancel(client, shop["order_id"], shop["token"], key=key)
    assert (again.status_code, again.json) == (400, first.json)
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_request_that_fails_validation_is_stored_and_replayed(app, client, ops):
    """What the code does (as payment APIs do): a 400 for a bad body is the key's answer.
    The same bad body replays it; the corrected body needs a new key (same key -> 422)."""
    key = str(uuid.uuid4())
    bad = {"reason": "not-a-reason", "notify_stakeholders": True}
    first = v2_cancel(client, ops["order_id"], ops["token"], key=key, body=bad)
    assert_api_error(first, 400, "validation_error")
    assert key_row(app, ops["user_id"], key)["status"] == 400
    again = v2_cancel(client, ops["order_id"], ops["token"], key=key, body=bad)
    assert (again.status_code, again.json) == (400, first.json)
    assert again.headers["Idempotent-Replayed"] == "true"
    fixed = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert_api_error(fixed, 422, "idempotency_key_reused")
    assert jobs(app, ops["order_id"]) == 0
    assert v2_cancel(client, ops["order_id"], ops["token"]).status_code == 202


def test_a_body_that_is_not_json_is_fingerprinted_by_its_bytes(app, client, ops):
    key = str(uuid.uuid4())
    response = client.post(cancel_path(ops["order_id"]), data=b"{not json",
                           content_type="application/json",
                           headers=v2_headers(ops["token"], key=key))
    assert_api_error(response, 400, "validation_error")
    again = client.post(cancel_path(ops["order_id"]), data=b"{not json!",
                        content_type="application/json",
                        headers=v2_headers(ops["token"], key=key))
    assert_api_error(again, 422, "idempotency_key_reused")


# --- Mismatch: 422 ----------------------------------------------------------------------------

def test_same_key_with_another_body_is_422(app, client, ops):
    key = str(uuid.uuid4())
    assert v2_cancel(client, ops["order_id"], ops["token"], key=key).status_code == 202
    before = order_state(app, ops["order_id"])
    for other in ({**RUNBOOK_BODY, "notes": "another note"},
                  {**RUNBOOK_BODY, "notify_stakeholders": False},
                  {"reason": "operational_request"}):
        response = v2_cancel(client, ops["order_id"], ops["token"], key=key, body=other)
        error = assert_api_error(response, 422, "idempotency_key_reused")
        assert "different request" in error["message"]
    assert jobs(app, ops["order_id"]) == 1
    assert order_state(app, ops["order_id"])["approval_requests"] == before["approval_requests"]


def test_same_key_on_another_path_is_422(app, client, factory, ops):
    key = str(uuid.uuid4())
    assert v2_cancel(client, ops["order_id"], ops["token"], key=key).status_code == 202
    other = factory.order(ops["store_id"], [(ops["product_id"], 1, 2500)])
    assert_api_error(v2_cancel(client, other, ops["token"], key=key), 422,
                     "idempotency_key_reused")
    response = client.post(f"/api/v2/orders/{ops['order_id']}/reinstate",
                           json=RUNBOOK_BODY, headers=v2_headers(ops["token"], key=key))
    assert_api_error(response, 422, "idempotency_key_reused")
    assert jobs(app, other) == 0


# --- In flight: 409 ---------------------------------------------------------------------------

def test_a_second_request_while_the_first_is_running_is_409(app, client, ops):
    key = str(uuid.uuid4())
    put_key(app, ops["user_id"], key, path=cancel_path(ops["order_id"]))
    before = order_state(app, ops["order_id"])
    response = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    error = assert_api_error(response, 409, "request_in_progress")
    assert "retry" in error["message"]
    assert jobs(app, ops["order_id"]) == 0 and order_state(app, ops["order_id"]) == before
    assert key_row(app, ops["user_id"], key)["state"] == "in_progress"
    # In flight with another body is still a mismatch, not a wait.
    response = v2_cancel(client, ops["order_id"], ops["token"], key=key, notes="other")
    assert_api_error(response, 422, "idempotency_key_reused")


def test_a_key_abandoned_in_flight_is_taken_over(app, client, ops):
    """A request whose process died leaves its key in_progress; after ABANDONED_AFTER the key
    is taken over rather than refused for 24 hours."""
    from cancellation.idempotency import ABANDONED_AFTER

    key = str(uuid.uuid4())
    put_key(app, ops["user_id"], key, path=cancel_path(ops["order_id"]),
            age=ABANDONED_AFTER + timedelta(seconds=5))
    response = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert response.status_code == 202 and "Idempotent-Replayed" not in response.headers
    assert jobs(app, ops["order_id"]) == 1


def test_a_request_that_crashes_frees_its_key(app, client, ops, monkeypatch):
    """A 500 is not an answer to remember: the key is released, the client's retry runs."""
    import blueprints.api_v2 as api_v2

    def boom(*_args, **_kwargs):
        raise RuntimeError("simulated crash")

    key = str(uuid.uuid4())
    with monkeypatch.context() as patch:
        patch.setattr(api_v2, "submit", boom)
        response = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert_api_error(response, 500, "internal_error")
    assert key_row(app, ops["user_id"], key) is None
    retry = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers


# --- Expiry -----------------------------------------------------------------------------------

def test_an_expired_key_runs_again_as_new(app, client, ops):
    key = str(uuid.uuid4())
    stale_answer = {"order_id": ops["order_id"], "status": "processing", "job_id": -1,
                    "status_url": "stale"}
    put_key(app, ops["user_id"], key, path=cancel_path(ops["order_id"]), state="completed",
            age=timedelta(hours=25), response=(202, stale_answer))
    response = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert response.status_code == 202 and "Idempotent-Replayed" not in response.headers
    assert response.json["job_id"] != -1 and jobs(app, ops["order_id"]) == 1
    row = key_row(app, ops["user_id"], key)
    assert row["body"] == response.json  # the new answer is what the key now replays


def test_expired_keys_are_purged_by_the_periodic_task(app, factory, worker):
    """purge_expired deletes keys past their 24 hours and keeps the others; the worker runs
    it as cancel_desk.purge_idempotency_keys (on beat's schedule)."""
    from cancellation.idempotency import TTL, purge_expired

    assert TTL == timedelta(hours=24)
    user = factory.user("ops_engineer")
    expired = [put_key(app, user, f"old-{i}", path="/api/v2/orders/1/cancel", state="completed",
                       age=timedelta(hours=24, seconds=1 + i), response=(202, {}))
               for i in range(2)]
    fresh = put_key(app, user, "fresh", path="/api/v2/orders/1/cancel", state="completed",
                    age=timedelta(hours=23, minutes=59), response=(202, {}))
    app.extensions["celery"].send_task("cancel_desk.purge_idempotency_keys")
    wait_for(lambda: key_row(app, user, "old-0") is None and key_row(app, user, "old-1") is None,
             timeout=20, message="the worker to purge expired keys")
    assert key_row(app, user, "fresh")["id"] == fresh
    # The function itself, too.
    again = put_key(app, user, "old-2", path="/x", state="completed",
                    age=timedelta(hours=30), response=(202, {}))
    with app.app_context():
        assert purge_expired() >= 1
    assert key_row(app, user, "old-2") is None and key_row(app, user, "fresh") is not None
    assert expired and again


# --- No key, bad key, per user ----------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "", "   "])
def test_no_key_is_400(app, client, ops, key):
    headers = bearer(ops["token"])
    if key is not None:
        headers["X-Idempotency-Key"] = key
    for path, body in ((cancel_path(ops["order_id"]), RUNBOOK_BODY),
                       (f"/api/v2/orders/{ops['order_id']}/reinstate", {"reason": "x"})):
        response = client.post(path, json=body, headers=headers)
        error = assert_api_error(response, 400, "validation_error")
        assert "X-Idempotency-Key" in error["message"]
        assert error["fields"][0]["field"] == "X-Idempotency-Key"
    assert jobs(app, ops["order_id"]) == 0


def test_key_length_limit(app, client, ops, factory):
    too_long = "k" * 256
    error = assert_api_error(v2_cancel(client, ops["order_id"], ops["token"], key=too_long),
                             400, "validation_error")
    assert "255" in error["message"] and jobs(app, ops["order_id"]) == 0
    longest = "k" * 255
    response = v2_cancel(client, ops["order_id"], ops["token"], key=longest)
    assert response.status_code == 202
    assert v2_cancel(client, ops["order_id"], ops["token"], key=longest).headers[
        "Idempotent-Replayed"] == "true"


def test_keys_are_per_user(app, client, factory, ops):
    other = factory.user("ops_engineer")
    other_token = factory.token(other)
    second = factory.order(ops["store_id"], [(ops["product_id"], 1, 2500)])
    key = "shared-by-accident"
    first = v2_cancel(client, ops["order_id"], ops["token"], key=key)
    assert first.status_code == 202
    theirs = v2_cancel(client, second, other_token, key=key)
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json["order_id"] == second and theirs.json["job_id"] != first.json["job_id"]
    # Each user's key replays their own answer.
    assert v2_cancel(client, second, other_token, key=key).json == theirs.json
    assert v2_cancel(client, ops["order_id"], ops["token"], key=key).json == first.json
    # And the other user cannot replay (or learn) the first user's answer with the same key.
    assert_api_error(v2_cancel(client, ops["order_id"], other_token, key=key), 422,
                     "idempotency_key_reused")


def test_get_requests_need_no_key(client, ops):
    response = client.get(f"/api/v2/orders/{ops['order_id']}/cancel/preview",
                          headers=bearer(ops["token"]))
    assert response.status_code == 200


# --- Eight concurrent requests with one key ---------------------------------------------------

def test_eight_concurrent_requests_with_one_key_cancel_once(app, factory, worker):
    from models import Cancellation, Refund

    from helpers import processor_payouts

    shop = factory.shop(role="ops_engineer", quantity=3, price_cents=2000)  # 66.00 paid
    order, key = shop["order_id"], str(uuid.uuid4())
    barrier = threading.Barrier(8)
    results = [None] * 8

    def send(i):
        client = app.test_client()
        barrier.wait()
        response = client.post(cancel_path(order), json=RUNBOOK_BODY,
                               headers=v2_headers(shop["token"], shop["user_id"], key))
        results[i] = (response.status_code, response.get_json(),
                      response.headers.get("Idempotent-Replayed"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(results), results
    ran = [r for r in results if r[0] == 202 and r[2] is None]
    replayed = [r for r in results if r[0] == 202 and r[2] == "true"]
    in_flight = [r for r in results if r[0] == 409]
    assert len(ran) == 1, results
    assert len(ran) + len(replayed) + len(in_flight) == 8, results
    assert all(r[1] == ran[0][1] for r in replayed)
    assert all(r[1]["error"]["code"] == "request_in_progress" for r in in_flight)
    assert v2_wait_cancel(app.test_client(), order, shop["token"])["status"] == "completed"
    assert jobs(app, order) == 1
    assert count(app, Cancellation, order_id=order) == 1
    assert count(app, Refund, order_id=order) == 1
    # After delivery: one payout, of the order's amount.
    from models import db

    with app.app_context():
        refund = db.session.scalar(db.select(Refund).where(Refund.order_id == order))
        key_of_refund = refund.idempotency_key
    wait_for(lambda: len(processor_payouts(app, [key_of_refund])) == 1,
             timeout=30, interval=0.2, message="the refund to be paid out")
    [payout] = processor_payouts(app, [key_of_refund])
    assert payout["amount_cents"] == 6600
    assert order_state(app, order)["refunded_cents"] == 6600
