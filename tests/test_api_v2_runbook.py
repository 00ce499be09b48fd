"""The runbook (seeds/004, CANCEL_ORDER v3.1) followed literally, one test per step, in its order.

An operator scripts it with curl: pre-checks 1-4, procedure 1-4 (idempotency key, preview,
cancel, poll), the rollback procedure (within two hours; after two hours), post-checks 1-3.
The whole run is done as the runbook's ops_engineer and once more as an admin (its
order_admin). The steps share one `Operator` per role; each step does what the runbook says and
checks the answer, so running the module top to bottom is running the runbook.
"""
import uuid
from datetime import datetime, timedelta

import pytest

from conftest import (
    RUNBOOK_BODY,
    Factory,
    assert_api_error,
    order_state,
    v2_cancel,
    v2_headers,
    v2_wait_cancel,
    wait_for,
)


def parse_time(value):
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1])


def utcnow():
    from models import utcnow as now

    return now()


class Operator:
    """One operator, their token, and the orders the runbook is run on."""

    def __init__(self, app, role):
        self.app, self.role = app, role
        self.client = app.test_client()
        self.f = f = Factory(app)
        self.store = f.store()
        self.flower, self.edible = f.product(3000), f.product(1250)
        f.stock(self.store, self.flower, on_hand=40)
        f.stock(self.store, self.edible, on_hand=20)
        self.customer = f.customer(points=500)
        # 2 x 30.00 + 3 x 12.50 = 97.50 + 9.75 tax = 107.25; earned 40 points, redeemed 100.
        self.order = f.order(self.store, [(self.flower, 2, 3000), (self.edible, 3, 1250)],
                             customer_id=self.customer, points_earned=40, points_redeemed=100)
        self.user = f.user(role)
        self.token = f.token(self.user)
        self.key = None
        self.preview = None
        self.accepted = None
        self.before = order_state(app, self.order)

    def headers(self, key=None):
        return v2_headers(self.token, self.user, key)

    def get(self, path, **query):
        response = self.client.get(path, query_string=query, headers=self.headers())
        return response

    def ok(self, path, **query):
        response = self.get(path, **query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json

    def post(self, path, body, key):
        return self.client.post(path, json=body, headers=self.headers(key))

    def available(self, product_id):
        items = self.ok("/api/v1/inventory", store_id=self.store,
                        product_id=product_id)["items"]
        return items[0]["available"] if items else None

    def points(self, customer_id):
        from models import Customer, db

        with self.app.app_context():
            return db.session.get(Customer, customer_id).loyalty_points

    def cancelled_order(self, *, status="pending", paid=False, customer=True, quantity=2):
        """An order of this operator's store, cancelled through procedure steps 3-4."""
        customer_id = self.f.customer(points=500) if customer else None
        order_id = self.f.order(self.store, [(self.flower, quantity, 3000)],
                                customer_id=customer_id, status=status, paid=paid,
                                points_earned=10 if customer else 0,
                                points_redeemed=30 if customer else 0)
        response = v2_cancel(self.client, order_id, self.token, user_id=self.user)
        assert response.status_code == 202 and response.json["status"] == "processing", \
            response.get_data(as_text=True)
        done = v2_wait_cancel(self.client, order_id, self.token)
        assert done["status"] == "completed", done
        return order_id, customer_id


@pytest.fixture(scope="module", params=["ops_engineer", "admin"])
def op(request, app, worker):
    """The operator. The runbook polls every 30 s; these tests poll every 0.3 s, so the
    per-user v2 rate limit (tested in test_api_v2_errors) is lifted while they run."""
    old_limit = app.config["API_V2_RATE_LIMIT"]
    app.config["API_V2_RATE_LIMIT"] = "1000 per minute"
    yield Operator(app, request.param)
    app.config["API_V2_RATE_LIMIT"] = old_limit


# --- Pre-checks -------------------------------------------------------------------------------

def test_precheck_1_authorization(op):
    """GET /api/v2/users/{user_id}/roles: the operator has order_admin (admin) or ops_engineer."""
    roles = op.ok(f"/api/v2/users/{op.user}/roles")
    assert roles["user_id"] == op.user
    assert roles["roles"] == [op.role]
    assert roles["active"] is True and roles["all_stores"] is True
    assert "use_api_v2" in roles["capabilities"] and "cancel_order" in roles["capabilities"]


@pytest.mark.parametrize("role", ["store_manager", "fulfillment", "customer_service"])
def test_precheck_1_other_roles_may_not_use_v2(app, factory, client, role):
    """The roles check is enforced, not advisory: every v2 endpoint refuses other roles (403)."""
    shop = factory.shop(role=role)
    headers = v2_headers(shop["token"], shop["user_id"])
    order = shop["order_id"]
    for path in (f"/api/v2/users/{shop['user_id']}/roles", f"/api/v2/orders/{order}/status",
                 f"/api/v2/orders/{order}/cancel/preview"):
        assert_api_error(client.get(path, headers=headers), 403, "forbidden")
    before = order_state(app, order)
    response = client.post(f"/api/v2/orders/{order}/cancel", json=RUNBOOK_BODY,
                           headers={**headers, "X-Idempotency-Key": str(uuid.uuid4())})
    assert_api_error(response, 403, "forbidden")
    assert order_state(app, order) == before


def test_precheck_2_order_status(op):
    """GET /api/v2/orders/{order_id}/status: valid states pending/in_progress/on_hold."""
    state = op.ok(f"/api/v2/orders/{op.order}/status")
    assert state["order_id"] == op.order
    assert state["status"] == "pending" and state["cancellable"] is True
    assert state["version"] == op.before["version"]
    for status, cancellable in (("in_progress", True), ("on_hold", True), ("completed", False),
                                ("cancelled", False), ("archived", False)):
        other = op.f.order(op.store, [(op.edible, 1, 1250)], status=status, reserve=False)
        state = op.ok(f"/api/v2/orders/{other}/status")
        assert (state["status"], state["cancellable"]) == (status, cancellable)


def test_precheck_3_business_rules(op):
    """GET /api/v2/orders/{order_id}/dependencies: no billing hold, not in transit."""
    deps = op.ok(f"/api/v2/orders/{op.order}/dependencies")
    assert deps["billing_hold"] is False and deps["shipment_status"] != "in_transit"
    assert deps["blockers"] == []
    held = op.f.order(op.store, [(op.edible, 1, 1250)], billing_hold=True,
                      shipment_status="in_transit", reserve=False)
    deps = op.ok(f"/api/v2/orders/{held}/dependencies")
    assert deps["billing_hold"] is True and deps["shipment_status"] == "in_transit"
    assert [b["code"] for b in deps["blockers"]] == ["billing_hold_active", "shipment_in_transit"]
    assert all(b["message"] for b in deps["blockers"])


def test_precheck_4_cancellation_window(op):
    """GET /api/v2/orders/{order_id}/metadata: age < 30 days for automatic approval."""
    meta = op.ok(f"/api/v2/orders/{op.order}/metadata")
    assert meta["age_days"] == 0 and meta["auto_approval_eligible"] is True
    assert meta["approval_reasons"] == [] and meta["total"] == "107.25"
    old = op.f.order(op.store, [(op.edible, 1, 1250)], age_days=45, reserve=False)
    meta = op.ok(f"/api/v2/orders/{old}/metadata")
    assert meta["age_days"] == 45
    if op.role == "admin":  # the age rule binds everyone but admins (SPEC §3)
        assert meta["auto_approval_eligible"] is True
    else:
        assert meta["auto_approval_eligible"] is False
        assert any("30 days" in why for why in meta["approval_reasons"])


# --- Procedure --------------------------------------------------------------------------------

def test_procedure_1_generate_idempotency_key(op):
    """IDEMPOTENCY_KEY=$(uuidgen): a fresh key nobody has used."""
    from models import IdempotencyKey, db

    op.key = str(uuid.uuid4()).upper()  # uuidgen prints upper case on some systems
    with op.app.app_context():
        assert db.session.scalar(db.select(IdempotencyKey).where(
            IdempotencyKey.user_id == op.user, IdempotencyKey.key == op.key)) is None


def test_procedure_2_preview_cancellation_impact(op):
    """GET .../cancel/preview: everything the cancel will do, and nothing changes."""
    preview = op.ok(f"/api/v2/orders/{op.order}/cancel/preview")
    assert order_state(op.app, op.order) == op.before  # the preview changed nothing
    assert preview["order_id"] == op.order and preview["outcome"] == "cancel"
    assert preview["errors"] == [] and preview["blockers"] == []
    assert preview["approval"] == {"required": False, "reasons": []}
    lines = {line["product_id"]: line for line in preview["stock_to_return"]}
    assert {p: (line["quantity"], line["returns_to_stock"]) for p, line in lines.items()} == {
        op.flower: (2, True), op.edible: (3, True)}
    assert preview["units_to_return"] == 5 and preview["inventory_reconciliation"] is False
    assert preview["refund"] == {"amount": "107.25", "method": "card", "will_refund": True,
                                 "split": [{"tender": "card", "paid_in": "card",
                                            "amount": "107.25", "how": "processor"}]}
    assert preview["loyalty"] == {"points_to_restore": 100, "points_to_reverse": 40}
    [notice] = preview["notifications"]
    assert notice["channel"] == "email" and notice["template"] == "order_full_cancelled"
    assert notice["recipient"] and "@" in notice["recipient"]
    op.preview = preview


def test_procedure_3_execute_cancellation(op):
    """POST .../cancel with X-User-ID and X-Idempotency-Key -> 202 processing."""
    from models import IdempotencyKey, db

    response = op.post(f"/api/v2/orders/{op.order}/cancel", RUNBOOK_BODY, op.key)
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.json
    assert body["status"] == "processing" and body["order_id"] == op.order
    assert body["status_url"] == f"/api/v2/orders/{op.order}/cancel/status"
    assert isinstance(body["job_id"], int)
    assert "Idempotent-Replayed" not in response.headers
    with op.app.app_context():
        stored = db.session.scalar(db.select(IdempotencyKey).where(
            IdempotencyKey.user_id == op.user, IdempotencyKey.key == op.key))
        assert (stored.state, stored.response_status) == ("completed", 202)
        assert timedelta(hours=23, minutes=59) < stored.expires_at - stored.created_at \
            <= timedelta(hours=24)
    op.accepted = body


def test_procedure_4_wait_for_async_processing(op):
    """Poll GET .../cancel/status: processing -> completed; the cancel did what was previewed."""
    first = op.ok(f"/api/v2/orders/{op.order}/cancel/status")
    assert first["status"] in ("processing", "completed") and first["job_id"] == \
        op.accepted["job_id"]
    done = v2_wait_cancel(op.client, op.order, op.token)
    assert done["status"] == "completed", done
    assert done["order_status"] == "cancelled" and isinstance(done["cancellation_id"], int)
    assert parse_time(done["finished_at"]) >= parse_time(done["requested_at"])
    after = order_state(op.app, op.order)
    assert after["status"] == "cancelled"
    assert after["refunded_cents"] == 10725
    assert after["loyalty_points"] == op.before["loyalty_points"] + 100 - 40
    reserved = {p: r for p, _on_hand, r in after["stock"]}
    reserved_before = {p: r for p, _on_hand, r in op.before["stock"]}
    assert reserved_before[op.flower] - reserved[op.flower] == 2
    assert reserved_before[op.edible] - reserved[op.edible] == 3
    assert after["cancellations"] == 1 and after["refunds"] == 1 and after["notifications"] == 1


# --- Rollback procedure -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def rollback(op, processor):
    """Order B: on hold, paid, with points; cancelled by the procedure while the payment processor
    declines, so its refund is still unpaid (failed, out of automatic retries) when the
    operator rolls back. The processor (the sandbox) is switched back on before any other step
    runs."""
    from models import Refund, db
    from sandbox_processor.control import SandboxControl

    # Order A's refund must go out normally first (post-check 2 waits for it).
    wait_for(lambda: billing_state(op, op.order) == ["succeeded"], timeout=30, interval=0.3,
             message="order A's refund")
    customer = op.f.customer(points=500)
    order = op.f.order(op.store, [(op.flower, 2, 3000), (op.edible, 1, 1250)],
                       customer_id=customer, status="on_hold", points_earned=25,
                       points_redeemed=80)
    start = {"available": {p: op.available(p) for p in (op.flower, op.edible)},
             "points": op.points(customer), "state": order_state(op.app, order)}
    sandbox = SandboxControl(processor.url, processor.key)
    sandbox.set("decline", times=-1)
    try:
        response = v2_cancel(op.client, order, op.token, user_id=op.user)
        assert response.status_code == 202, response.json
        assert v2_wait_cancel(op.client, order, op.token)["status"] == "completed"
        max_attempts = op.app.config["DELIVERY_MAX_ATTEMPTS"]

        def gave_up():
            with op.app.app_context():
                refund = db.session.scalar(db.select(Refund).where(Refund.order_id == order))
                return refund.status == "failed" and refund.attempts >= max_attempts \
                    and refund.next_attempt_at is None
        wait_for(gave_up, timeout=30, interval=0.3, message="order B's refund to fail for good")
        with op.app.app_context():
            key = db.session.scalar(db.select(Refund.idempotency_key).where(
                Refund.order_id == order))
        assert sandbox.refunds(key) == []  # declined every time: nothing paid
    finally:
        sandbox.reset()
    return {"order": order, "customer": customer, **start}


def billing_state(op, order_id):
    return [r["status"] for r in op.ok(f"/api/v2/billing/orders/{order_id}/status")["refunds"]]


def test_rollback_1_check_reinstatement_eligibility(op, rollback):
    """GET .../reinstate/eligibility within two hours: eligible, with the deadline."""
    from models import Cancellation, db

    answer = op.ok(f"/api/v2/orders/{rollback['order']}/reinstate/eligibility")
    assert answer["eligible"] is True and answer["reasons"] == [], answer
    with op.app.app_context():
        cancellation = db.session.scalar(db.select(Cancellation).where(
            Cancellation.order_id == rollback["order"]))
        assert answer["cancellation_id"] == cancellation.id
        expected = cancellation.created_at.replace(microsecond=0) + timedelta(hours=2)
    assert parse_time(answer["deadline"]) == expected
    assert abs(parse_time(answer["deadline"]) - (utcnow() + timedelta(hours=2))) \
        < timedelta(minutes=2)


def test_rollback_2_reinstate_order(op, rollback):
    """POST .../reinstate with a new key: previous status, stock re-reserved, loyalty entries
    reversed, the unpaid refund voided, audited."""
    from models import LoyaltyEntry, db

    order = rollback["order"]
    cancelled = {p: op.available(p) for p in (op.flower, op.edible)}
    assert cancelled[op.flower] == rollback["available"][op.flower] + 2
    assert cancelled[op.edible] == rollback["available"][op.edible] + 1
    assert op.points(rollback["customer"]) == 500 + 80 - 25
    key = str(uuid.uuid4())
    body = {"reason": "rollback_cancellation", "restore_previous_state": True}
    response = op.post(f"/api/v2/orders/{order}/reinstate", body, key)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["status"] == "on_hold" and response.json["reinstated"] is True
    assert op.ok(f"/api/v2/orders/{order}/status")["status"] == "on_hold"
    # Stock re-reserved: available back down to where it was before the cancel.
    assert {p: op.available(p) for p in (op.flower, op.edible)} == rollback["available"]
    # Loyalty: every entry of the cancellation reversed, the balance back to its start.
    assert op.points(rollback["customer"]) == rollback["points"] == 500
    with op.app.app_context():
        entries = sorted((e.kind, e.points) for e in db.session.scalars(
            db.select(LoyaltyEntry).where(LoyaltyEntry.order_id == order)))
    assert entries == [("earned", 25), ("redeemed", -80), ("restored", 80), ("reversed", -25)]
    # The refund that was never paid out is voided; the order is paid again.
    billing = op.ok(f"/api/v2/billing/orders/{order}/status")
    assert [r["status"] for r in billing["refunds"]] == ["voided"]
    assert billing["payment_status"] == "paid" and billing["refunded"] == "0.00"
    audit = op.ok(f"/api/v2/orders/{order}/audit-log")["events"]
    [event] = [e for e in audit if e["action"] == "order.reinstated"]
    assert event["user_id"] == op.user and event["after"]["status"] == "on_hold"
    assert event["after"]["reason"] == "rollback_cancellation"
    assert event["after"]["refund_voided"] == "79.75"
    # The retry of the same request replays the answer; it does not reinstate twice.
    again = op.post(f"/api/v2/orders/{order}/reinstate", body, key)
    assert (again.status_code, again.json) == (200, response.json)
    assert again.headers["Idempotent-Replayed"] == "true"
    final = order_state(op.app, order)
    assert final["status"] == "on_hold" and final["loyalty_points"] == 500
    assert len([e for e in op.ok(f"/api/v2/orders/{order}/audit-log")["events"]
                if e["action"] == "order.reinstated"]) == 1


def test_rollback_after_2_hours_requires_manual_remediation(op):
    """After two hours: not eligible (window_passed); POST reinstate -> 400 naming
    CASE-REINSTATE and where the original order data is."""
    from models import Cancellation, db

    order, _customer = op.cancelled_order()
    with op.app.app_context():
        cancellation = db.session.scalar(db.select(Cancellation).where(
            Cancellation.order_id == order))
        cancellation.created_at -= timedelta(hours=2, minutes=1)
        db.session.commit()
    before = order_state(op.app, order)
    answer = op.ok(f"/api/v2/orders/{order}/reinstate/eligibility")
    assert answer["eligible"] is False
    assert [r["code"] for r in answer["reasons"]] == ["window_passed"]
    assert "CASE-REINSTATE" in answer["reasons"][0]["message"]
    assert parse_time(answer["deadline"]) < utcnow()
    response = op.post(f"/api/v2/orders/{order}/reinstate",
                       {"reason": "rollback_cancellation", "restore_previous_state": True},
                       str(uuid.uuid4()))
    error = assert_api_error(response, 400, "invalid_state")
    assert "CASE-REINSTATE" in error["message"]
    assert f"/api/v2/orders/{order}/audit-log" in error["message"]
    assert [r["code"] for r in error["reasons"]] == ["window_passed"]
    assert order_state(op.app, order) == before


def test_rollback_window_is_a_setting(op, app):
    """reinstate_window_hours (Setting) moves the deadline."""
    from models import Setting, db

    order, _customer = op.cancelled_order()
    with app.app_context():
        Setting.put("reinstate_window_hours", 0)
        db.session.commit()
    try:
        answer = op.ok(f"/api/v2/orders/{order}/reinstate/eligibility")
        assert [r["code"] for r in answer["reasons"]] == ["window_passed"]
        assert "0-hour" in answer["reasons"][0]["message"]
    finally:
        with app.app_context():
            Setting.put("reinstate_window_hours", 2)
            db.session.commit()
    assert op.ok(f"/api/v2/orders/{order}/reinstate/eligibility")["eligible"] is True


# --- Post-checks ------------------------------------------------------------------------------

def test_postcheck_1_verify_order_status(op):
    """GET /api/v2/orders/{order_id}/status: status="cancelled"."""
    state = op.ok(f"/api/v2/orders/{op.order}/status")
    assert state["status"] == "cancelled" and state["cancellable"] is False


def test_postcheck_2_billing_system_updated(op):
    """GET /api/v2/billing/orders/{order_id}/status: the refund, paid out."""
    def paid():
        billing = op.ok(f"/api/v2/billing/orders/{op.order}/status")
        return billing if [r["status"] for r in billing["refunds"]] == ["succeeded"] else None

    billing = wait_for(paid, timeout=30, interval=0.3, message="the refund to be paid out")
    assert billing["payment_status"] == "refunded"
    assert billing["paid"] == billing["refunded"] == "107.25"
    [refund] = billing["refunds"]
    assert refund["amount"] == "107.25" and refund["method"] == "card"
    assert refund["gateway_reference"] and refund["succeeded_at"]


def test_postcheck_2_notification_sent(op):
    """GET /api/v2/notifications/orders/{order_id}/history: the customer was told."""
    def sent():
        history = op.ok(f"/api/v2/notifications/orders/{op.order}/history")
        return history if [n["status"] for n in history["notifications"]] == ["sent"] \
            else None

    history = wait_for(sent, timeout=30, interval=0.3, message="the notification to be sent")
    [notice] = history["notifications"]
    assert notice["channel"] == "email" and notice["template"] == "order_full_cancelled"
    assert notice["sent_at"] and notice["attempts"] >= 1
    assert "*" in notice["recipient"]  # masked: ops engineers do not see contact details


def test_postcheck_3_audit_log_entry(op):
    """GET /api/v2/orders/{order_id}/audit-log: the cancellation, with user_id and timestamp."""
    events = op.ok(f"/api/v2/orders/{op.order}/audit-log")["events"]
    [event] = [e for e in events if e["action"] == "order.cancelled"]
    assert event["user_id"] == op.user
    assert abs(parse_time(event["at"]) - utcnow()) < timedelta(minutes=5)
    assert event["before"]["status"] == "pending" and event["after"]["status"] == "cancelled"
    assert event["after"]["reason"] == "operational_request"
    assert event["after"]["notes"] == "Cancelled via OpsGuide"
    assert event["after"]["refund"] == op.preview["refund"]["amount"]
    assert event["request_id"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


# --- Rollback refused: each reason eligibility gives ----------------------------------------

def reinstate(op, order):
    return op.post(f"/api/v2/orders/{order}/reinstate",
                   {"reason": "rollback_cancellation", "restore_previous_state": True},
                   str(uuid.uuid4()))


def test_rollback_after_the_refund_was_paid_out_leaves_a_balance_due(op, processor):
    """Order A's refund went out through the processor (post-check 2). Reinstating no longer
    fails on it: eligibility says what happens to the money — the refund stays paid, the order
    comes back owing it — and the reinstatement does exactly that, telling the customer, with
    no second movement at the processor."""
    from models import Notification, Refund, db
    from sandbox_processor.control import SandboxControl

    answer = op.ok(f"/api/v2/orders/{op.order}/reinstate/eligibility")
    assert answer["eligible"] is True, answer["reasons"]
    [money] = answer["effects"]["money"]
    assert (money["tender"], money["effect"], money["amount"]) == (
        "card", "balance_due", op.preview["refund"]["amount"])
    assert answer["effects"]["balance_due"] == op.preview["refund"]["amount"]
    assert answer["effects"]["status"] == "pending"

    response = reinstate(op, op.order)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert (body["status"], body["payment_status"], body["balance_due"]) == (
        "pending", "balance_due", op.preview["refund"]["amount"])
    with op.app.app_context():
        [refund] = db.session.scalars(db.select(Refund).where(Refund.order_id == op.order))
        assert refund.status == "succeeded"  # the money stays with the customer
        notices = db.session.scalars(db.select(Notification).where(
            Notification.order_id == op.order, Notification.template == "order_reinstated"))
        assert len(notices.all()) == 1
        key = refund.idempotency_key
    ledger = SandboxControl(processor.url, processor.key).refunds(idempotency_key=key)
    assert len(ledger) == 1


def test_rollback_refused_when_the_stock_is_gone(op):
    from models import StockLevel, db

    product = op.f.product(1000)
    op.f.stock(op.store, product, on_hand=5)
    order = op.f.order(op.store, [(product, 4, 1000)], paid=False)
    assert v2_cancel(op.client, order, op.token, user_id=op.user).status_code == 202
    assert v2_wait_cancel(op.client, order, op.token)["status"] == "completed"
    with op.app.app_context():  # meanwhile the shelf was sold down to 2 units
        stock = db.session.scalar(db.select(StockLevel).where(
            StockLevel.store_id == op.store, StockLevel.product_id == product))
        stock.on_hand = 2
        db.session.commit()
    answer = op.ok(f"/api/v2/orders/{order}/reinstate/eligibility")
    assert answer["eligible"] is False
    assert [r["code"] for r in answer["reasons"]] == ["stock_unavailable"]
    assert "Only 2 of" in answer["reasons"][0]["message"]
    before = order_state(op.app, order)
    error = assert_api_error(reinstate(op, order), 409, "not_reinstatable")
    assert [r["code"] for r in error["reasons"]] == ["stock_unavailable"]
    assert order_state(op.app, order) == before


def test_rollback_refused_when_the_order_changed_since(op):
    from models import Order, db

    order, _customer = op.cancelled_order()
    with op.app.app_context():  # someone edits the cancelled order afterwards
        row = db.session.get(Order, order)
        row.shipment_status = "ready_for_pickup"
        db.session.commit()
    answer = op.ok(f"/api/v2/orders/{order}/reinstate/eligibility")
    assert [r["code"] for r in answer["reasons"]] == ["order_changed"]
    error = assert_api_error(reinstate(op, order), 409, "not_reinstatable")
    assert [r["code"] for r in error["reasons"]] == ["order_changed"]


def test_rollback_refused_for_an_order_that_is_not_cancelled(op):
    order = op.f.order(op.store, [(op.edible, 1, 1250)], reserve=False)
    answer = op.ok(f"/api/v2/orders/{order}/reinstate/eligibility")
    assert answer == {"eligible": False, "reasons": answer["reasons"], "deadline": None,
                      "cancellation_id": None, "effects": None}
    assert [r["code"] for r in answer["reasons"]] == ["not_cancelled"]
    assert_api_error(reinstate(op, order), 400, "invalid_state")
