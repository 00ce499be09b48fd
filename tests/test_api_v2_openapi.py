"""/api/openapi.json: a valid OpenAPI 3.1 document covering every /api/ route of v1 and v2, built
from the same pydantic models the code uses — and real responses match it. Each endpoint is called
(successes and errors) and every JSON answer is validated twice: against the response model the
document names (pydantic, extra fields forbidden) and against the document's own JSON schema."""
import json
import re
import uuid

import pytest
from jsonschema import Draft202012Validator

from blueprints.api_common import responses as out

from conftest import RUNBOOK_BODY, bearer, v2_cancel, v2_headers, v2_wait_cancel, wait_for


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200 and response.is_json
    return response.json


def test_document_is_valid_openapi_3_1(document):
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_document_needs_no_token_and_is_stable(app, client, document):
    assert client.get("/api/openapi.json", headers=bearer("bad")).json == document


def test_every_api_route_is_documented(app, document):
    missing, undocumented = [], []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        view = app.view_functions[rule.endpoint]
        if getattr(view, "openapi", None) is None:
            undocumented.append(rule.rule)
            continue
        path = rule.rule.replace("<int:", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if method.lower() not in document["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert undocumented == [] and missing == []
    assert "/healthz" in document["paths"]
    # Both APIs are in the one document.
    assert any(p.startswith("/api/v1/") for p in document["paths"])
    assert sum(p.startswith("/api/v2/") for p in document["paths"]) == 12


def operations(document):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_v2_operations_document_the_runbook_contract(document):
    for path, method, operation in operations(document):
        if not path.startswith("/api/v2/"):
            continue
        assert "429" in operation["responses"], (method, path)
        assert operation["security"] == [{"bearer": []}]
        headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert headers["X-User-ID"]["required"] is False
        if method == "post":
            assert headers["X-Idempotency-Key"]["required"] is True
            assert headers["X-Idempotency-Key"]["schema"]["maxLength"] == 255
            assert {"400", "403", "404", "409", "422", "429"} <= set(operation["responses"])
            assert operation["requestBody"]["required"] is True
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/ErrorBody")


def test_v1_and_v2_share_their_schemas(document):
    """One Refund and one Notification schema, used by v1's order and v2's post-checks."""
    schemas = document["components"]["schemas"]
    assert schemas["OrderDetail"]["properties"]["refunds"]["items"]["$ref"].endswith("/Refund")
    assert schemas["Billing"]["properties"]["refunds"]["items"]["$ref"].endswith("/Refund")
    assert schemas["NotificationHistory"]["properties"]["notifications"]["items"][
        "$ref"].endswith("/Notification")
    assert schemas["OrderDetail"]["properties"]["notifications"]["items"][
        "$ref"].endswith("/Notification")
    assert schemas["V2CancelBody"]["properties"]["reason"] == schemas["CancelOrderBody"][
        "properties"]["reason"]
    assert schemas["V2CancelBody"]["additionalProperties"] is False


# --- Real responses against the document ------------------------------------------------------

class Recorder:
    """Calls the API and keeps (method, documented path, status, json) of every answer."""

    def __init__(self, app, document):
        self.app, self.document, self.client = app, document, app.test_client()
        self.adapter = app.url_map.bind("localhost")
        self.seen = []

    def __call__(self, method, url, expect, **kwargs):
        response = self.client.open(url, method=method, **kwargs)
        assert response.status_code == expect, (method, url, response.get_data(as_text=True))
        path = url.split("?")[0]
        endpoint, _args = self.adapter.match(path, method=method)
        rule = next(r for r in self.app.url_map.iter_rules(endpoint) if method in r.methods)
        template = rule.rule.replace("<int:", "{").replace(">", "}")
        self.seen.append((method.lower(), template, response.status_code,
                          response.get_json(silent=True), response.headers.get("Content-Type")))
        return response


def check_against_document(document, method, path, status, body, content_type):
    operation = document["paths"][path][method]
    assert str(status) in operation["responses"], f"{method} {path}: {status} undocumented"
    answer = operation["responses"][str(status)]
    if "content" not in answer:  # the document itself
        return None
    assert content_type == "application/json", (method, path, content_type)
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    # 1. The pydantic model the document was generated from (extra fields are errors).
    getattr(out, name).model_validate(body)
    # 2. The document's own schema, as a client generated from it would check.
    schema = {"$ref": ref, "components": document["components"]}
    errors = list(Draft202012Validator(schema).iter_errors(body))
    assert not errors, f"{method} {path} {status}: {[e.message for e in errors[:3]]}"
    return name


def test_real_responses_match_the_document(app, factory, worker, document):
    call = Recorder(app, document)
    store = factory.store()
    product, unstocked = factory.product(2000), factory.product(500)
    factory.stock(store, product, on_hand=40)
    customer = factory.customer()
    admin = factory.user("admin", password="pw-for-openapi")
    ops = factory.user("ops_engineer")
    manager = factory.user("store_manager", stores=[store])
    admin_t, ops_t, manager_t = (factory.token(u) for u in (admin, ops, manager))
    order = lambda **kw: factory.order(store, [(product, 1, 2000)],  # noqa: E731
                                       customer_id=customer, **kw)
    admin_h, ops_h = bearer(admin_t), bearer(ops_t)

    # Auth and health.
    with app.app_context():
        from models import User, db

        email = db.session.get(User, admin).email
    call("POST", "/api/auth/token", 200, json={"email": email, "password": "pw-for-openapi"})
    call("POST", "/api/auth/token", 401, json={"email": email, "password": "wrong"})
    call("POST", "/api/auth/token", 400, json={"email": email})
    call("GET", "/healthz", 200)
    call("GET", "/api/openapi.json", 200)

    # v1.
    v1_order = factory.order(store, [(product, 2, 2000), (unstocked, 1, 500)],
                             customer_id=customer, points_earned=5, points_redeemed=10)
    call("GET", f"/api/v1/orders?store_id={store}", 200, headers=admin_h)
    call("GET", "/api/v1/orders?page=0", 400, headers=admin_h)
    call("GET", f"/api/v1/orders/{v1_order}", 200, headers=admin_h)
    call("GET", f"/api/v1/inventory?store_id={store}", 200, headers=ops_h)
    call("GET", "/api/v1/inventory?store_id=x", 400, headers=ops_h)
    call("PUT", f"/api/v1/orders/{v1_order}/status", 200, headers=admin_h,
         json={"status": "cancelled", "reason": "inventory_issues", "notes": "openapi"})
    call("GET", f"/api/v1/orders/{v1_order}", 200, headers=bearer(manager_t))
    call("PUT", f"/api/v1/orders/{v1_order}/status", 400, headers=admin_h,
         json={"status": "cancelled", "reason": "inventory_issues"})
    call("PUT", f"/api/v1/orders/{order(billing_hold=True)}/status", 409, headers=admin_h,
         json={"status": "cancelled", "reason": "inventory_issues"})
    call("PUT", f"/api/v1/orders/{order(status='in_progress')}/status", 202, headers=ops_h,
         json={"status": "cancelled", "reason": "inventory_issues"})
    call("PUT", "/api/v1/orders/2147483000/status", 404, headers=admin_h,
         json={"status": "cancelled", "reason": "inventory_issues"})
    call("PUT", f"/api/v1/orders/{order()}/status", 401,
         json={"status": "cancelled", "reason": "inventory_issues"})
    call("POST", f"/api/v1/orders/{v1_order}/refund", 202, headers=admin_h)
    call("PUT", "/api/v1/inventory/return", 200, headers=admin_h, json={"order_id": v1_order})
    call("PUT", "/api/v1/inventory/return", 400, headers=admin_h, json={"order_id": "x"})
    call("POST", "/api/v1/notifications/customer", 202, headers=admin_h,
         json={"order_id": v1_order})
    fulfillment_t = factory.token(factory.user("fulfillment", stores=[store]))
    call("POST", "/api/v1/notifications/customer", 403, headers=bearer(fulfillment_t),
         json={"order_id": v1_order})

    # v2, in the runbook's order, then its errors.
    target = order(points_earned=3)
    for path in (f"/api/v2/users/{ops}/roles", f"/api/v2/orders/{target}/status",
                 f"/api/v2/orders/{target}/dependencies", f"/api/v2/orders/{target}/metadata",
                 f"/api/v2/orders/{target}/cancel/preview"):
        call("GET", path, 200, headers=v2_headers(ops_t, ops))
    key = str(uuid.uuid4())
    call("POST", f"/api/v2/orders/{target}/cancel", 202, headers=v2_headers(ops_t, ops, key),
         json=RUNBOOK_BODY)
    call("POST", f"/api/v2/orders/{target}/cancel", 202, headers=v2_headers(ops_t, ops, key),
         json=RUNBOOK_BODY)  # the replay
    v2_wait_cancel(call.client, target, ops_t)
    call("GET", f"/api/v2/orders/{target}/cancel/status", 200, headers=ops_h)
    wait_for(lambda: call.client.get(f"/api/v2/billing/orders/{target}/status", headers=ops_h
                                     ).json["refunds"][0]["status"] == "succeeded",
             timeout=30, interval=0.3, message="the refund")
    for path in (f"/api/v2/billing/orders/{target}/status",
                 f"/api/v2/notifications/orders/{target}/history",
                 f"/api/v2/orders/{target}/audit-log",
                 f"/api/v2/orders/{target}/reinstate/eligibility"):
        call("GET", path, 200, headers=ops_h)
    rollback = order(paid=False)
    v2_cancel(call.client, rollback, ops_t)
    v2_wait_cancel(call.client, rollback, ops_t)
    call("POST", f"/api/v2/orders/{rollback}/reinstate", 200,
         headers=v2_headers(ops_t, ops, str(uuid.uuid4())),
         json={"reason": "rollback_cancellation", "restore_previous_state": True})
    changed = order(paid=False)  # cancelled, then edited: reinstating it is refused (409)
    v2_cancel(call.client, changed, ops_t)
    v2_wait_cancel(call.client, changed, ops_t)
    with app.app_context():
        from models import Order, db

        db.session.get(Order, changed).shipment_status = "ready_for_pickup"
        db.session.commit()
    call("POST", f"/api/v2/orders/{changed}/reinstate", 409,
         headers=v2_headers(ops_t, ops, str(uuid.uuid4())), json={"reason": "rollback"})
    approval = order(status="in_progress")
    call("POST", f"/api/v2/orders/{approval}/cancel", 202,
         headers=v2_headers(ops_t, ops, str(uuid.uuid4())), json=RUNBOOK_BODY)
    call("GET", f"/api/v2/orders/{approval}/cancel/status", 200, headers=ops_h)
    failed_key = str(uuid.uuid4())
    call("POST", f"/api/v2/orders/{target}/cancel", 400, headers=v2_headers(ops_t, ops),
         json=RUNBOOK_BODY)  # no key
    call("POST", f"/api/v2/orders/{target}/cancel", 400,
         headers=v2_headers(ops_t, ops, failed_key), json=RUNBOOK_BODY)  # already cancelled
    call("POST", f"/api/v2/orders/{target}/cancel", 422,
         headers=v2_headers(ops_t, ops, failed_key), json={"reason": "duplicate_order"})
    call("POST", f"/api/v2/orders/{order(shipment_status='in_transit')}/cancel", 409,
         headers=v2_headers(ops_t, ops, str(uuid.uuid4())), json=RUNBOOK_BODY)
    call("GET", f"/api/v2/orders/{target}/status", 403, headers=bearer(manager_t))
    call("GET", f"/api/v2/orders/{target}/status", 403, headers=v2_headers(ops_t, admin))
    call("GET", f"/api/v2/orders/{target}/status", 401)
    call("GET", "/api/v2/orders/2147483000/metadata", 404, headers=ops_h)
    call("GET", f"/api/v2/orders/{order()}/cancel/status", 404, headers=ops_h)
    call("GET", f"/api/v2/orders/{target}/cancel/preview?reason=x", 400, headers=ops_h)
    old = app.config["API_V2_RATE_LIMIT"]
    app.config["API_V2_RATE_LIMIT"] = "1 per minute"
    try:
        limited_t = factory.token(factory.user("ops_engineer"))
        call("GET", f"/api/v2/orders/{target}/status", 200, headers=bearer(limited_t))
        call("GET", f"/api/v2/orders/{target}/status", 429, headers=bearer(limited_t))
        call("POST", f"/api/v2/orders/{target}/cancel", 429,
             headers=bearer(limited_t, **{"X-Idempotency-Key": "k"}), json=RUNBOOK_BODY)
    finally:
        app.config["API_V2_RATE_LIMIT"] = old

    checked = {}
    for method, path, status, body, content_type in call.seen:
        name = check_against_document(document, method, path, status, body, content_type)
        checked.setdefault((method, path), set()).add((status, name))
    # Every v2 operation, and each v1 one called here, answered successfully at least once
    # (the fuzzer covers every operation of the document).
    for path, method, _operation in operations(document):
        if path.startswith("/api/v2/") or (method, path) in checked:
            statuses = {s for s, _name in checked.get((method, path), set())}
            assert any(s < 300 for s in statuses), f"{method.upper()} {path} never succeeded"
    assert any(name == "ApprovalAccepted" for s in checked.values() for _st, name in s)


def test_the_document_rejects_what_the_code_rejects(document):
    """Request schemas in the document are the validating models: a body the document forbids
    (an unknown field) is one the API refuses."""
    body = document["components"]["schemas"]["V2CancelBody"]
    errors = list(Draft202012Validator(body).iter_errors({**RUNBOOK_BODY, "force": True}))
    assert errors and "force" in errors[0].message
    assert not list(Draft202012Validator(body).iter_errors(RUNBOOK_BODY))


# --- what the document says the server does (issue 9) ----------------------------------------

def test_a_number_with_no_fraction_is_an_integer(app, client, factory):
    """JSON Schema's "type": "integer" takes 3976.0; so does the server (3976.5 it refuses)."""
    shop = factory.shop(role="admin")
    refused = v2_cancel(client, shop["order_id"], shop["token"], version=1.5)
    assert refused.status_code == 400 and refused.json["error"]["code"] == "validation_error"
    accepted = v2_cancel(client, shop["order_id"], shop["token"], version=1.0)
    assert accepted.status_code == 202, accepted.json
    bulk = client.post("/api/v1/orders/bulk_update", headers=bearer(shop["token"]), json={
        "order_ids": [float(factory.shop()["order_id"])], "status": "cancelled",
        "reason": "inventory_issues"})
    assert bulk.status_code < 300, bulk.json


def test_the_document_states_minimums_and_the_nul_rule(client, document, factory):
    schemas = document["components"]["schemas"]
    ids = schemas["BulkUpdateBody"]["properties"]["order_ids"]["items"]
    assert ids["type"] == "integer" and ids["minimum"] == 1 and ids["maximum"] == 2**31 - 1
    token = factory.shop(role="admin")["token"]
    refused = client.post("/api/v1/orders/bulk_update", headers=bearer(token), json={
        "order_ids": [0], "status": "cancelled", "reason": "inventory_issues"})
    assert refused.status_code == 400  # as the document says

    nul = "^[^\\u0000]*$"
    assert "NUL" in document["info"]["description"]
    for model, field in (("TokenRequest", "email"), ("V2CancelBody", "notes"),
                         ("ReinstateBody", "reason"), ("CustomerRequest", "contact"),
                         ("BulkUpdateBody", "notes")):
        prop = schemas[model]["properties"][field]
        strings = [prop] + prop.get("anyOf", [])
        assert any(s.get("pattern") == nul for s in strings), (model, field, prop)
    orders = document["paths"]["/api/v1/orders"]["get"]["parameters"]
    q = next(p for p in orders if p["name"] == "q")["schema"]
    assert any(s.get("pattern") == nul for s in [q] + q.get("anyOf", []))
    # Enumerations and dates need no pattern: the NUL rule is for free text.
    reason = schemas["V2CancelBody"]["properties"]["reason"]
    assert "pattern" not in json.dumps(reason)
    # And the server refuses NUL where the document says so.
    assert client.get("/api/v1/orders?q=a%00b", headers=bearer(token)).status_code == 400
    assert client.post("/api/auth/token", json={"email": "a\x00b@x.example",
                                                 "password": "x"}).status_code == 400


def test_a_method_the_document_does_not_list_is_a_405_with_allow(client, document):
    for path, methods in document["paths"].items():
        url = path.replace("{order_id}", "1").replace("{user_id}", "1") \
            .replace("{approval_id}", "1").replace("{job_id}", "1")
        url = re.sub(r"\{[a-z_]+\}", "1", url)
        listed = {m.upper() for m in methods}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - listed:
            response = client.open(url, method=method)
            assert response.status_code == 405, (method, url, response.status_code)
            allow = {m.strip() for m in response.headers.get("Allow", "").split(",")}
            assert listed <= allow and method not in allow, (method, url, allow)
