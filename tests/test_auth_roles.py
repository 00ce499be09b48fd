"""SPEC §3 and §6: who may see and cancel what, when approval is needed, and token auth."""
import hashlib

import pytest
from sqlalchemy import text

from conftest import assert_api_error, bearer, cancel, order_state

STORE_SCOPED = ["store_manager", "fulfillment", "customer_service"]
EVERY_STORE = ["admin", "ops_engineer"]
ALL_ROLES = EVERY_STORE + STORE_SCOPED

CUSTOMER_REQUEST = {"reason": "customer_requested",
                    "customer_request": {"contact": "+1 555 0100",
                                         "requested_at": "2024-01-02T03:04:05Z"}}


def allowed_reason(role):
    """A reason each role may use (customer service only customer_requested)."""
    return CUSTOMER_REQUEST if role == "customer_service" else {"reason": "inventory_issues"}


@pytest.fixture
def two_stores(factory):
    """A user's own store with an order, and another store with an order."""
    def build(role):
        own = factory.shop(role=role)
        other = factory.shop(role="admin")
        return own, other
    return build


@pytest.mark.parametrize("role", ALL_ROLES)
def test_list_shows_only_the_users_stores(client, factory, two_stores, role):
    own, other = two_stores(role)
    headers = bearer(own["token"])
    numbers = {}
    for name, shop in (("own", own), ("other", other)):
        order = client.get(f"/api/v1/orders/{shop['order_id']}",
                           headers=bearer(other["token"])).json
        numbers[name] = order["number"]

    mine = client.get(f"/api/v1/orders?q={numbers['own']}", headers=headers)
    theirs = client.get(f"/api/v1/orders?q={numbers['other']}", headers=headers)

    assert mine.status_code == 200 and [o["id"] for o in mine.json["items"]] == [own["order_id"]]
    expected = [other["order_id"]] if role in EVERY_STORE else []
    assert [o["id"] for o in theirs.json["items"]] == expected
    assert theirs.json["total"] == len(expected)
    if role in STORE_SCOPED:
        page = client.get("/api/v1/orders?per_page=200", headers=headers).json
        assert {o["store_id"] for o in page["items"]} == {own["store_id"]}
        stock = client.get("/api/v1/inventory", headers=headers).json["items"]
        assert {s["store_id"] for s in stock} == {own["store_id"]}


@pytest.mark.parametrize("role", STORE_SCOPED)
def test_another_stores_order_is_404_on_get_and_put(app, client, two_stores, role):
    own, other = two_stores(role)
    before = order_state(app, other["order_id"])

    got = client.get(f"/api/v1/orders/{other['order_id']}", headers=bearer(own["token"]))
    put = cancel(client, other["order_id"], own["token"], **allowed_reason(role))

    assert_api_error(got, 404, "not_found")
    assert_api_error(put, 404, "not_found")
    unknown = client.get("/api/v1/orders/99999999", headers=bearer(own["token"]))
    assert got.json == unknown.json  # indistinguishable from an order that does not exist
    assert order_state(app, other["order_id"]) == before


@pytest.mark.parametrize("role", EVERY_STORE)
def test_admin_and_ops_see_every_store(client, two_stores, role):
    own, other = two_stores(role)
    response = client.get(f"/api/v1/orders/{other['order_id']}", headers=bearer(own["token"]))
    assert response.status_code == 200 and response.json["id"] == other["order_id"]


@pytest.mark.parametrize("reason", ["inventory_issues", "duplicate_order", "operational_request"])
def test_customer_service_may_cancel_only_for_customer_requests(app, client, factory, reason):
    shop = factory.shop(role="customer_service")
    before = order_state(app, shop["order_id"])
    assert_api_error(cancel(client, shop["order_id"], shop["token"], reason=reason), 403,
                     "forbidden")
    assert order_state(app, shop["order_id"]) == before
    assert cancel(client, shop["order_id"], shop["token"],
                  **CUSTOMER_REQUEST).status_code == 200


@pytest.mark.parametrize("role, status, order_kw, expected", [
    ("fulfillment", "pending", {}, 200),
    ("fulfillment", "on_hold", {}, 202),
    ("fulfillment", "in_progress", {}, 202),
    ("customer_service", "pending", {}, 200),
    ("customer_service", "on_hold", {}, 200),
    ("customer_service", "in_progress", {}, 202),
    ("ops_engineer", "in_progress", {}, 202),
    ("store_manager", "in_progress", {}, 200),
    ("store_manager", "pending", {"age_days": 31}, 202),
    ("store_manager", "pending", {"age_days": 29}, 200),
    ("store_manager", "pending", {"age_days": 30.1}, 202),  # 30 days and 2.4 hours: older
    ("ops_engineer", "pending", {"age_days": 45}, 202),
    ("admin", "in_progress", {"age_days": 400, "price_cents": 99999, "quantity": 9}, 200),
])
def test_direct_cancel_or_approval(app, client, factory, role, status, order_kw, expected):
    shop = factory.shop(role=role, status=status, **order_kw)
    before = order_state(app, shop["order_id"])

    response = cancel(client, shop["order_id"], shop["token"], **allowed_reason(role))

    assert response.status_code == expected, response.json
    if expected == 200:
        assert response.json["status"] == "cancelled"
        return
    approval = response.json["approval_request"]
    assert approval["status"] == "pending" and approval["order_id"] == shop["order_id"]
    assert approval["requested_by"] == shop["user_id"] and approval["why"]
    after = order_state(app, shop["order_id"])
    assert after["approval_requests"] == before["approval_requests"] + 1
    # Nothing was cancelled: only the request (and its audit event) exists.
    unchanged = {k: v for k, v in after.items() if k not in ("approval_requests", "audit_events")}
    assert unchanged == {k: v for k, v in before.items()
                         if k not in ("approval_requests", "audit_events")}


@pytest.mark.parametrize("role, total_cents, expected", [
    ("fulfillment", 50001, 202), ("customer_service", 50001, 202),
    ("ops_engineer", 50001, 202), ("ops_engineer", 50000, 200),
    ("store_manager", 250000, 200), ("admin", 250000, 200),
])
def test_value_over_the_threshold_needs_approval(client, factory, role, total_cents, expected):
    shop = factory.shop(role=role, quantity=1, price_cents=total_cents, tax_rate=0)
    response = cancel(client, shop["order_id"], shop["token"], **allowed_reason(role))
    assert response.status_code == expected, response.json
    if expected == 202:
        assert any("threshold" in why for why in response.json["approval_request"]["why"])


@pytest.mark.parametrize("role, method, path, body, allowed", [
    ("fulfillment", "post", "/api/v1/orders/{order_id}/refund", None, False),
    ("fulfillment", "post", "/api/v1/notifications/customer", {"order_id": "{order_id}"}, False),
    ("fulfillment", "put", "/api/v1/inventory/return", {"order_id": "{order_id}"}, False),
    ("customer_service", "put", "/api/v1/inventory/return", {"order_id": "{order_id}"}, False),
    ("customer_service", "post", "/api/v1/orders/{order_id}/refund", None, True),
    ("store_manager", "put", "/api/v1/inventory/return", {"order_id": "{order_id}"}, True),
    ("ops_engineer", "post", "/api/v1/notifications/customer", {"order_id": "{order_id}"}, True),
])
def test_delivery_and_inventory_endpoints_need_their_capability(app, client, factory, role,
                                                                method, path, body, allowed):
    shop = factory.shop(role=role, status="cancelled")
    url = path.format(order_id=shop["order_id"])
    payload = None if body is None else {"order_id": shop["order_id"]}
    before = order_state(app, shop["order_id"])

    response = getattr(client, method)(url, json=payload, headers=bearer(shop["token"]))

    if allowed:
        assert response.status_code != 403, response.json
    else:
        assert_api_error(response, 403, "forbidden")
        assert order_state(app, shop["order_id"]) == before


# --- authentication -----------------------------------------------------------------------------

def test_no_token_is_401_json(client):
    for response in (client.get("/api/v1/orders"),
                     client.put("/api/v1/orders/1/status", json={"status": "cancelled"})):
        error = assert_api_error(response, 401, "unauthorized")
        assert "Bearer" in error["message"]


@pytest.mark.parametrize("header", ["Bearer cd_not-a-real-token", "Bearer ", "Basic abc:def",
                                    "cd_token-without-scheme", "Bearer " + "x" * 5000])
def test_bad_token_is_401(client, header):
    assert_api_error(client.get("/api/v1/orders", headers={"Authorization": header}), 401)


def test_x_user_id_must_match_the_token(client, factory):
    user_id = factory.user("admin")
    token = factory.token(user_id)
    ok = client.get("/api/v1/orders", headers=bearer(token, **{"X-User-ID": str(user_id)}))
    assert ok.status_code == 200
    for claimed in (str(user_id + 1), "abc", ""):
        response = client.get("/api/v1/orders", headers=bearer(token, **{"X-User-ID": claimed}))
        assert_api_error(response, 403, "forbidden")


def test_inactive_users_token_is_401(app, client, factory):
    from models import User, db

    user_id = factory.user("admin")
    token = factory.token(user_id)
    assert client.get("/api/v1/orders", headers=bearer(token)).status_code == 200
    with app.app_context():
        db.session.get(User, user_id).active = False
        db.session.commit()
    assert_api_error(client.get("/api/v1/orders", headers=bearer(token)), 401)


def test_revoked_and_expired_tokens_are_401(app, client, factory):
    from datetime import timedelta

    from models import ApiToken, User, db, utcnow

    user_id = factory.user("admin")
    with app.app_context():
        user = db.session.get(User, user_id)
        revoked, revoked_plain = ApiToken.issue(user)
        revoked.revoked = True
        _expired, expired_plain = ApiToken.issue(user, expires_at=utcnow() - timedelta(minutes=1))
        db.session.commit()
    for plain in (revoked_plain, expired_plain):
        assert_api_error(client.get("/api/v1/orders", headers=bearer(plain)), 401)


def test_token_endpoint(client, factory):
    factory.user("store_manager", email="Token.Person@Test.Example", password="right-password")

    wrong = client.post("/api/auth/token", json={"email": "token.person@test.example",
                                                 "password": "wrong-password"})
    unknown = client.post("/api/auth/token", json={"email": "nobody@test.example",
                                                   "password": "right-password"})
    assert_api_error(wrong, 401, "invalid_credentials")
    assert unknown.json == wrong.json  # no hint which accounts exist

    right = client.post("/api/auth/token", json={"email": " TOKEN.person@test.example ",
                                                 "password": "right-password"})
    assert right.status_code == 200, right.json
    assert right.json["role"] == "store_manager"
    assert client.get("/api/v1/orders", headers=bearer(right.json["token"])).status_code == 200


def test_token_endpoint_refuses_an_inactive_user(client, factory):
    factory.user("admin", email="gone@test.example", password="right-password", active=False)
    response = client.post("/api/auth/token", json={"email": "gone@test.example",
                                                    "password": "right-password"})
    assert_api_error(response, 401)


def test_tokens_are_stored_hashed(app, client, factory):
    factory.user("admin", email="hashed@test.example", password="right-password")
    plain = client.post("/api/auth/token", json={"email": "hashed@test.example",
                                                 "password": "right-password"}).json["token"]
    from models import db
    with app.app_context():
        stored = db.session.execute(text("SELECT * FROM api_tokens")).all()
    values = [str(value) for row in stored for value in row]
    assert plain not in values
    assert not any(plain in value for value in values if len(value) > 12)
    assert hashlib.sha256(plain.encode()).hexdigest() in values


def test_the_api_ignores_session_cookies(client, factory):
    """A browser session never authenticates an API call (so CSRF-exempting the API is safe)."""
    user_id = factory.user("admin")
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["_fresh"] = True
    assert_api_error(client.get("/api/v1/orders"), 401)


@pytest.mark.parametrize("role, sees_contact", [
    ("admin", True), ("store_manager", True), ("customer_service", True),
    ("fulfillment", False), ("ops_engineer", False),
])
def test_customer_contact_is_masked_for_roles_that_do_not_need_it(client, factory, role,
                                                                  sees_contact):
    shop = factory.shop(role=role)
    order = client.get(f"/api/v1/orders/{shop['order_id']}", headers=bearer(shop["token"])).json
    email, phone = order["customer"]["email"], order["customer"]["phone"]
    if sees_contact:
        assert email.startswith("customer-") and phone == "+1 555 010 2000"
    else:
        assert "***" in email and "customer-" not in email
        assert phone == "***-***-2000"


def test_asking_twice_files_one_approval_request(app, client, factory):
    shop = factory.shop(role="fulfillment", status="in_progress")
    first = cancel(client, shop["order_id"], shop["token"])
    second = cancel(client, shop["order_id"], shop["token"])
    assert first.status_code == second.status_code == 202
    assert first.json["approval_request"]["id"] == second.json["approval_request"]["id"]
    assert order_state(app, shop["order_id"])["approval_requests"] == 1
    other = factory.user("fulfillment", stores=[shop["store_id"]])
    third = cancel(client, shop["order_id"], factory.token(other))
    assert third.status_code == 202  # another requester's request is their own
    assert third.json["approval_request"]["id"] != first.json["approval_request"]["id"]
