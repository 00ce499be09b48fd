"""The runbook's "Common Errors" produced on purpose and checked: 400 invalid state, 403
insufficient permissions, 409 billing hold (and the other blockers), 429 with Retry-After and the
retry with the same idempotency key; plus the approval path and a job that fails in the worker.

Every error body is {"error": {"code", "message", ...}} (`assert_api_error`). A refused request
changes nothing: `order_state` is compared before and after.
"""
import json
import uuid
from urllib.parse import quote

import pytest

from conftest import (
    RUNBOOK_BODY,
    assert_api_error,
    bearer,
    order_state,
    v2_cancel,
    v2_headers,
    v2_wait_cancel,
)


def jobs_of(app, order_id):
    from models import CancelJob, db

    with app.app_context():
        return [(j.id, j.status) for j in db.session.scalars(
            db.select(CancelJob).where(CancelJob.order_id == order_id).order_by(CancelJob.id))]


def stored_key(app, user_id, key):
    from models import IdempotencyKey, db

    with app.app_context():
        row = db.session.scalar(db.select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key))
        return None if row is None else (row.state, row.response_status)


def assert_error_shape(response):
    body = response.json
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"])
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]


# --- 400 Bad Request - Invalid order state ----------------------------------------------------

@pytest.mark.parametrize("status", ["completed", "cancelled", "archived"])
def test_400_invalid_order_state(app, client, factory, status):
    shop = factory.shop(role="ops_engineer", status=status)
    before = order_state(app, shop["order_id"])
    response = v2_cancel(client, shop["order_id"], shop["token"], user_id=shop["user_id"])
    error = assert_api_error(response, 400, "invalid_state")
    assert_error_shape(response)
    assert status in error["message"] and error["status"] == status
    assert order_state(app, shop["order_id"]) == before
    assert jobs_of(app, shop["order_id"]) == []


def test_400_cancelling_twice(app, client, factory, worker):
    """The runbook: "order may already be cancelled". A second cancel (new key) is 400."""
    shop = factory.shop(role="ops_engineer")
    assert v2_cancel(client, shop["order_id"], shop["token"]).status_code == 202
    assert v2_wait_cancel(client, shop["order_id"], shop["token"])["status"] == "completed"
    before = order_state(app, shop["order_id"])
    error = assert_api_error(v2_cancel(client, shop["order_id"], shop["token"]), 400,
                             "invalid_state")
    assert "cancelled" in error["message"]
    assert order_state(app, shop["order_id"]) == before
    assert len(jobs_of(app, shop["order_id"])) == 1
    # Polling still reports the cancellation that happened, not the refused second request.
    state = client.get(f"/api/v2/orders/{shop['order_id']}/cancel/status",
                       headers=bearer(shop["token"])).json
    assert state["status"] == "completed" and state["order_status"] == "cancelled"


@pytest.mark.parametrize("body, field", [
    ({"reason": "because", "notes": "x", "notify_stakeholders": True}, "reason"),
    ({"notes": "no reason"}, "reason"),
    ({"reason": "operational_request", "notify_stakeholders": "yes"}, "notify_stakeholders"),
    ({"reason": "operational_request", "extra": 1}, "extra"),
    ({"reason": "operational_request", "notes": "n" * 2001}, "notes"),
])
def test_400_invalid_body_names_the_field(app, client, factory, body, field):
    shop = factory.shop(role="ops_engineer")
    before = order_state(app, shop["order_id"])
    response = v2_cancel(client, shop["order_id"], shop["token"], body=body)
    error = assert_api_error(response, 400, "validation_error")
    assert field in [f["field"] for f in error["fields"]]
    assert order_state(app, shop["order_id"]) == before


def test_400_customer_requested_needs_the_request_details(app, client, factory):
    """The v2 body has no customer-request fields, so reason customer_requested is refused by
    the same domain rule as everywhere (contact and time required)."""
    shop = factory.shop(role="ops_engineer")
    response = v2_cancel(client, shop["order_id"], shop["token"], reason="customer_requested")
    error = assert_api_error(response, 400, "validation_error")
    assert "customer_request.contact" in [f["field"] for f in error["fields"]]


# --- 401 / 403 Forbidden - Insufficient permissions -------------------------------------------

def test_401_without_or_with_a_bad_token(client, factory):
    shop = factory.shop(role="ops_engineer")
    path = f"/api/v2/orders/{shop['order_id']}/status"
    assert_api_error(client.get(path), 401, "unauthorized")
    assert_api_error(client.get(path, headers=bearer("cd_not-a-token")), 401, "unauthorized")
    assert_api_error(client.get(path, headers={"Authorization": f"Basic {shop['token']}"}), 401)
    response = client.post(f"/api/v2/orders/{shop['order_id']}/cancel", json=RUNBOOK_BODY,
                           headers={"X-Idempotency-Key": str(uuid.uuid4())})
    assert_api_error(response, 401, "unauthorized")


def test_401_for_a_deactivated_user(app, client, factory):
    from models import User, db

    shop = factory.shop(role="ops_engineer")
    with app.app_context():
        db.session.get(User, shop["user_id"]).active = False
        db.session.commit()
    assert_api_error(client.get(f"/api/v2/orders/{shop['order_id']}/status",
                                headers=bearer(shop["token"])), 401)


@pytest.mark.parametrize("role", ["store_manager", "fulfillment", "customer_service"])
def test_403_insufficient_role(app, client, factory, role):
    """Verify user roles: only ops_engineer and admin use v2 — even for orders of their own
    store, and on every endpoint, GET or POST."""
    shop = factory.shop(role=role)
    order = shop["order_id"]
    headers = v2_headers(shop["token"], shop["user_id"])
    before = order_state(app, order)
    for path in (f"/api/v2/orders/{order}/dependencies", f"/api/v2/orders/{order}/metadata",
                 f"/api/v2/orders/{order}/cancel/status",
                 f"/api/v2/orders/{order}/reinstate/eligibility",
                 f"/api/v2/billing/orders/{order}/status",
                 f"/api/v2/notifications/orders/{order}/history",
                 f"/api/v2/orders/{order}/audit-log"):
        assert_api_error(client.get(path, headers=headers), 403, "forbidden")
    key = str(uuid.uuid4())
    for path, body in ((f"/api/v2/orders/{order}/cancel", RUNBOOK_BODY),
                       (f"/api/v2/orders/{order}/reinstate", {"reason": "x"})):
        response = client.post(path, json=body, headers={**headers, "X-Idempotency-Key": key})
        assert_api_error(response, 403, "forbidden")
    assert order_state(app, order) == before
    assert stored_key(app, shop["user_id"], key) is None  # refused before the key is taken


def test_403_x_user_id_must_match_the_token(app, client, factory):
    shop = factory.shop(role="ops_engineer")
    other = factory.user("ops_engineer")
    order = shop["order_id"]
    for claimed in (str(other), "abc", "", f"{shop['user_id']}0"):
        response = client.get(f"/api/v2/orders/{order}/status",
                              headers=bearer(shop["token"], **{"X-User-ID": claimed}))
        error = assert_api_error(response, 403, "forbidden")
        assert "X-User-ID" in error["message"]
    key = str(uuid.uuid4())
    response = client.post(f"/api/v2/orders/{order}/cancel", json=RUNBOOK_BODY,
                           headers=v2_headers(shop["token"], other, key))
    assert_api_error(response, 403, "forbidden")
    assert stored_key(app, shop["user_id"], key) is None and jobs_of(app, order) == []
    # The same key, with the right X-User-ID, then runs (nothing was remembered for it).
    response = client.post(f"/api/v2/orders/{order}/cancel", json=RUNBOOK_BODY,
                           headers=v2_headers(shop["token"], shop["user_id"], key))
    assert response.status_code == 202 and "Idempotent-Replayed" not in response.headers


def test_other_stores_orders_are_visible_to_v2_roles(client, factory):
    """"Verify ... order ownership": store scoping (404 for another store's order) does not
    apply to v2, whose two roles work on every store (SPEC §3). Ownership is shown here: an
    ops engineer with no store and an admin see an order of any store; unknown ids are 404."""
    shop = factory.shop(role="store_manager")
    for role in ("ops_engineer", "admin"):
        token = factory.token(factory.user(role))
        response = client.get(f"/api/v2/orders/{shop['order_id']}/status", headers=bearer(token))
        assert response.status_code == 200 and response.json["order_id"] == shop["order_id"]
        assert_api_error(client.get("/api/v2/orders/2147483000/status", headers=bearer(token)),
                         404, "not_found")
        assert_api_error(client.get("/api/v2/users/2147483000/roles", headers=bearer(token)),
                         404, "not_found")


# --- 409 Conflict - Billing hold active (and the other blockers) ----------------------------

@pytest.mark.parametrize("order_kw, code", [
    ({"billing_hold": True}, "billing_hold_active"),
    ({"shipment_status": "in_transit"}, "shipment_in_transit"),
    ({"billing_hold": True, "shipment_status": "in_transit"}, "billing_hold_active"),
])
def test_409_blockers(app, client, factory, order_kw, code):
    shop = factory.shop(role="ops_engineer", **order_kw)
    before = order_state(app, shop["order_id"])
    response = v2_cancel(client, shop["order_id"], shop["token"], user_id=shop["user_id"])
    assert_api_error(response, 409, code)
    assert_error_shape(response)
    assert order_state(app, shop["order_id"]) == before and jobs_of(app, shop["order_id"]) == []


def test_409_billing_hold_resolved_then_cancel_works(app, client, factory, worker):
    """"Resolve billing issues first": once the hold is lifted the same request goes through
    (with a new key: the refused one is remembered as refused)."""
    from models import Order, db

    shop = factory.shop(role="ops_engineer", billing_hold=True)
    key = str(uuid.uuid4())
    assert_api_error(v2_cancel(client, shop["order_id"], shop["token"], key=key), 409,
                     "billing_hold_active")
    with app.app_context():
        db.session.get(Order, shop["order_id"]).billing_hold = False
        db.session.commit()
    replay = v2_cancel(client, shop["order_id"], shop["token"], key=key)
    assert replay.status_code == 409 and replay.headers["Idempotent-Replayed"] == "true"
    assert v2_cancel(client, shop["order_id"], shop["token"]).status_code == 202
    assert v2_wait_cancel(client, shop["order_id"], shop["token"])["status"] == "completed"


def test_409_stale_version(app, client, factory):
    from models import Order, db

    shop = factory.shop(role="ops_engineer")
    with app.app_context():  # someone changes the order after the operator looked at it
        db.session.get(Order, shop["order_id"]).shipment_status = "ready_for_pickup"
        db.session.commit()
    before = order_state(app, shop["order_id"])
    assert before["version"] == 2
    response = v2_cancel(client, shop["order_id"], shop["token"], version=1)
    error = assert_api_error(response, 409, "concurrent_modification")
    assert error["current_version"] == 2
    assert order_state(app, shop["order_id"]) == before


# --- 429 Too Many Requests: wait and retry with the same idempotency key ----------------------

def test_429_then_retry_with_the_same_idempotency_key(app, client, factory, worker,
                                                      v2_rate_limit):
    shop = factory.shop(role="ops_engineer")
    second = factory.order(shop["store_id"], [(shop["product_id"], 1, 2500)], paid=False)
    token, user = shop["token"], shop["user_id"]
    v2_rate_limit("5 per minute")
    first_key, limited_key = str(uuid.uuid4()), str(uuid.uuid4())
    accepted = v2_cancel(client, shop["order_id"], token, key=first_key, user_id=user)
    assert accepted.status_code == 202
    answers = [client.get(f"/api/v2/orders/{second}/status", headers=bearer(token))
               for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200] * 4
    # Under the limit the remaining budget is reported, but no Retry-After (429s only).
    assert answers[-1].headers["X-RateLimit-Remaining"] == "0"
    assert all("Retry-After" not in answer.headers for answer in answers)
    # Over the limit: GETs and POSTs alike, on any v2 endpoint.
    limited = client.get(f"/api/v2/orders/{second}/status", headers=bearer(token))
    assert_api_error(limited, 429, "rate_limited")
    assert_error_shape(limited)
    retry_after = limited.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and 1 <= int(retry_after) <= 60
    # A retry of the accepted request, and a new request: both refused before anything runs.
    for order, key in ((shop["order_id"], first_key), (second, limited_key)):
        response = v2_cancel(client, order, token, key=key, user_id=user)
        assert_api_error(response, 429, "rate_limited")
        assert response.headers["Retry-After"].isdigit()
    assert stored_key(app, user, limited_key) is None and jobs_of(app, second) == []
    # Other users are not limited by this one.
    other = factory.token(factory.user("ops_engineer"))
    assert client.get(f"/api/v2/orders/{second}/status", headers=bearer(other)).status_code == 200
    # v1 is not rate limited by the v2 limit.
    assert client.get(f"/api/v1/orders/{second}", headers=bearer(token)).status_code == 200

    v2_rate_limit("120 per minute")  # "wait 60 seconds": the limit no longer applies
    replay = v2_cancel(client, shop["order_id"], token, key=first_key, user_id=user)
    assert (replay.status_code, replay.json) == (202, accepted.json)
    assert replay.headers["Idempotent-Replayed"] == "true"
    fresh = v2_cancel(client, second, token, key=limited_key, user_id=user)
    assert fresh.status_code == 202 and fresh.json["status"] == "processing"
    assert "Idempotent-Replayed" not in fresh.headers
    for order in (shop["order_id"], second):
        assert v2_wait_cancel(client, order, token)["status"] == "completed"
        assert len(jobs_of(app, order)) == 1
        assert order_state(app, order)["cancellations"] == 1


def test_rate_limit_is_one_budget_per_user_across_v2(app, client, factory, v2_rate_limit):
    """The limit counts a user's requests on all of v2 together, read from the config per
    request."""
    shop = factory.shop(role="admin")
    order = shop["order_id"]
    v2_rate_limit("3 per minute")
    codes = [client.get(path, headers=bearer(shop["token"])).status_code
             for path in (f"/api/v2/orders/{order}/status", f"/api/v2/orders/{order}/metadata",
                          f"/api/v2/orders/{order}/cancel/preview",
                          f"/api/v2/orders/{order}/dependencies")]
    assert codes == [200, 200, 200, 429]
    v2_rate_limit("4 per minute")  # a new limit is a new window
    assert client.get(f"/api/v2/orders/{shop['order_id']}/status",
                      headers=bearer(shop["token"])).status_code == 200


# --- Approval instead of a direct cancel ------------------------------------------------------

@pytest.mark.parametrize("kw, why", [
    ({"quantity": 2, "price_cents": 30000}, "approval threshold"),  # 660.00 > 500.00
    ({"status": "in_progress"}, "Fulfillment has started"),
    ({"age_days": 31}, "30 days"),
])
def test_202_pending_approval_for_an_ops_engineer(app, client, factory, worker, kw, why):
    shop = factory.shop(role="ops_engineer", **kw)
    before = order_state(app, shop["order_id"])
    response = v2_cancel(client, shop["order_id"], shop["token"], user_id=shop["user_id"])
    assert response.status_code == 202, response.json
    body = response.json
    assert body["status"] == "pending_approval"
    approval = body["approval_request"]
    assert approval["order_id"] == shop["order_id"] and approval["status"] == "pending"
    assert approval["requested_by"] == shop["user_id"]
    assert any(why in reason for reason in approval["why"])
    assert approval["requested_cancellation"]["reason"] == "operational_request"
    assert approval["requested_cancellation"]["notify_customer"] is True
    state = client.get(f"/api/v2/orders/{shop['order_id']}/cancel/status",
                       headers=bearer(shop["token"])).json
    assert state["status"] == "pending_approval"
    assert state["approval_request_id"] == approval["id"]
    after = order_state(app, shop["order_id"])
    assert after["status"] == before["status"] and after["cancellations"] == 0
    assert after["approval_requests"] == 1
    # Asking again (a new key) joins the open request rather than filing a second one.
    again = v2_cancel(client, shop["order_id"], shop["token"])
    assert again.json["approval_request"]["id"] == approval["id"]
    assert order_state(app, shop["order_id"])["approval_requests"] == 1


def test_admin_cancels_a_large_order_directly(app, client, factory, worker):
    shop = factory.shop(role="admin", quantity=2, price_cents=30000)
    response = v2_cancel(client, shop["order_id"], shop["token"])
    assert response.status_code == 202 and response.json["status"] == "processing"
    assert "approval_request" not in response.json
    assert v2_wait_cancel(client, shop["order_id"], shop["token"])["status"] == "completed"


# --- A job that fails in the worker reports the failure's code --------------------------------

def test_cancel_status_reports_a_failed_job_with_its_code(app, client, factory):
    """The checks pass when the request arrives; by the time the worker runs, a billing hold
    was put on the order. The job fails with the blocker's code, the order is untouched."""
    from cancellation import AuditContext, CancelRequest, jobs
    from models import CancelJob, Order, User, db

    shop = factory.shop(role="ops_engineer")
    order = shop["order_id"]
    with app.app_context():
        # The job as submit_cancel writes it, without dispatching it to the workers.
        actor = db.session.get(User, shop["user_id"])
        request = CancelRequest(reason="operational_request", notes="n")
        job = CancelJob(order_id=order, user_id=actor.id, payload=request.to_payload(),
                        source=AuditContext(source="api_v2").source)
        db.session.add(job)
        db.session.get(Order, order).billing_hold = True
        db.session.commit()
        job_id = job.id
        assert jobs.run_cancel_job(job_id) == "failed"
    state = client.get(f"/api/v2/orders/{order}/cancel/status", headers=bearer(shop["token"]))
    assert state.status_code == 200
    assert state.json["status"] == "failed" and state.json["job_id"] == job_id
    assert state.json["error"]["code"] == "billing_hold_active"
    assert state.json["error"]["message"] and state.json["order_status"] == "pending"
    assert order_state(app, order)["cancellations"] == 0


def test_cancel_status_404_before_any_cancel(client, factory):
    shop = factory.shop(role="ops_engineer")
    assert_api_error(client.get(f"/api/v2/orders/{shop['order_id']}/cancel/status",
                                headers=bearer(shop["token"])), 404, "not_found")


# --- Text no database can store is a 400, not a 500 (found by the fuzzer on PostgreSQL) -------

@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"], ids=["nul", "lone-surrogate"])
def test_unstorable_text_is_a_validation_error_everywhere(app, client, factory, bad):
    from cancellation import CancelRequest, ValidationFailed

    shop = factory.shop(role="admin")
    order, token = shop["order_id"], shop["token"]
    before = order_state(app, order)
    raw = lambda body: json.dumps(body).encode()  # noqa: E731 - keeps \ud800 as an escape
    calls = [
        ("POST", "/api/auth/token", {"email": f"x{bad}@example.com", "password": "p"}, {}),
        ("POST", f"/api/v2/orders/{order}/cancel", {**RUNBOOK_BODY, "notes": bad},
         {"X-Idempotency-Key": str(uuid.uuid4())}),
        ("POST", f"/api/v2/orders/{order}/reinstate", {"reason": bad},
         {"X-Idempotency-Key": str(uuid.uuid4())}),
        ("PUT", f"/api/v1/orders/{order}/status",
         {"status": "cancelled", "reason": "inventory_issues", "notes": bad}, {}),
        ("PUT", f"/api/v1/orders/{order}/status",
         {"status": "cancelled", "reason": "inventory_issues", bad: 1}, {}),
    ]
    for method, path, body, headers in calls:
        response = client.open(path, method=method, data=raw(body),
                               content_type="application/json",
                               headers={**bearer(token), **headers})
        error = assert_api_error(response, 400, "validation_error")
        assert error["fields"], error
    # In a query string a surrogate cannot even be sent (werkzeug decodes it to U+FFFD).
    for path in (f"/api/v1/orders?q={quote(bad, errors='surrogatepass')}",
                 f"/api/v2/orders/{order}/cancel/preview?reason="
                 f"{quote(bad, errors='surrogatepass')}"):
        response = client.get(path, headers=bearer(token))
        if "\x00" in bad or "preview" in path:
            assert_api_error(response, 400, "validation_error")
        else:
            assert response.status_code == 200
    assert order_state(app, order) == before
    # The domain refuses it too, for every entry point (the panel's forms included).
    if "\x00" in bad:
        with pytest.raises(ValidationFailed):
            CancelRequest(reason="inventory_issues", notes=bad).validate()
