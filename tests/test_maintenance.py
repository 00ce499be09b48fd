"""Maintenance mode (SPEC §2, seed "cancellation during system maintenance"): the admin's switch,
cancels queued (202) by the panel and both APIs while it is on with nothing changed, and the
queue processed exactly once by the real worker when it ends."""
import re
import threading
import uuid

import pytest

from blueprints.api_common import responses as out
from cancellation import maintenance
from cancellation.audit import AuditContext
from models import (
    ApprovalRequest,
    AuditEvent,
    CancelJob,
    Cancellation,
    Order,
    Refund,
    Setting,
    User,
    db,
)

from conftest import (
    RUNBOOK_BODY,
    assert_api_error,
    bearer,
    cancel,
    csrf_from,
    order_state,
    v2_cancel,
    v2_headers,
    wait_for,
)
from helpers import queued_cancels, reserved


def setting(app):
    with app.app_context():
        return maintenance.is_on(fresh=True)


def job_of(app, job_id):
    with app.app_context():
        job = db.session.get(CancelJob, job_id)
        return {"status": job.status, "error_code": job.error_code, "order_id": job.order_id,
                "payload": job.payload, "attempts": job.attempts}


def wait_job(app, job_id, statuses=("completed", "failed", "pending_approval"), timeout=40):
    return wait_for(lambda: job_of(app, job_id)["status"] in statuses and job_of(app, job_id),
                    timeout=timeout, interval=0.2, message=f"cancel job {job_id}")


def without_audit(state):
    return {k: v for k, v in state.items() if k != "audit_events"}


def effects(app, order_id):
    """Rows a cancellation writes for an order: each must appear exactly once."""
    with app.app_context():
        count = lambda model, *where: db.session.scalar(  # noqa: E731
            db.select(db.func.count()).select_from(model).where(*where))
        return {"cancellations": count(Cancellation, Cancellation.order_id == order_id),
                "refunds": count(Refund, Refund.order_id == order_id),
                "status": db.session.get(Order, order_id).status}


# --- the switch ------------------------------------------------------------------------------

def test_admin_switches_maintenance_in_the_panel_audited_and_the_banner_follows(app, client, auth,
                                                                                 factory):
    shop = factory.shop(role="admin")
    auth(shop["user_id"])
    try:
        page = client.get("/admin/maintenance/")
        assert page.status_code == 200
        assert 'data-testid="maintenance-state">Off' in page.get_data(as_text=True)
        assert 'data-testid="maintenance-banner"' not in client.get("/").get_data(as_text=True)

        # The confirmation is required; CSRF too.
        refused = client.post("/admin/maintenance/", data={"turn": "on",
                                                            "csrf_token": csrf_from(page)})
        assert refused.status_code == 400 and not setting(app)
        assert client.post("/admin/maintenance/", data={"turn": "on", "confirm": "y"}
                           ).status_code == 400
        assert not setting(app)

        switched = client.post("/admin/maintenance/", data={
            "turn": "on", "confirm": "y", "csrf_token": csrf_from(page)})
        assert switched.status_code == 302 and setting(app)

        for path in ("/", f"/orders/{shop['order_id']}", "/dashboard", "/approvals"):
            text = client.get(path).get_data(as_text=True)
            assert 'data-testid="maintenance-banner"' in text, path
            assert "Maintenance mode" in text and "cancellations are queued" in text
            assert re.search(r'data-testid="maintenance-queued">\d+</span> queued', text)
        # The cancel dialog says so before the user confirms.
        assert 'data-testid="maintenance-note"' in client.get(
            f"/orders/{shop['order_id']}").get_data(as_text=True)

        page = client.get("/admin/maintenance/")
        assert 'data-testid="maintenance-state">On' in page.get_data(as_text=True)
        switched = client.post("/admin/maintenance/", data={
            "turn": "off", "confirm": "y", "csrf_token": csrf_from(page)})
        assert switched.status_code == 302 and not setting(app)
        assert 'data-testid="maintenance-banner"' not in client.get("/").get_data(as_text=True)
    finally:
        with app.app_context():
            maintenance.switch(db.session.get(User, shop["user_id"]), False, AuditContext())

    with app.app_context():
        events = db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.action == "settings.maintenance_mode",
            AuditEvent.actor_id == shop["user_id"]).order_by(AuditEvent.seq)).all()
        assert [(e.before, {k: e.after[k] for k in ("maintenance_mode",)}) for e in events] == [
            ({"maintenance_mode": False}, {"maintenance_mode": True}),
            ({"maintenance_mode": True}, {"maintenance_mode": False})]
        assert all(e.ip and e.request_id for e in events)


def test_switching_to_the_state_it_is_in_changes_and_records_nothing(app, factory):
    admin_id = factory.user("admin")
    with app.app_context():
        admin = db.session.get(User, admin_id)
        assert maintenance.switch(admin, False, AuditContext()) is False
        assert db.session.scalar(db.select(db.func.count()).select_from(AuditEvent).where(
            AuditEvent.actor_id == admin_id)) == 0


@pytest.mark.parametrize("role", ["store_manager", "fulfillment", "customer_service",
                                  "ops_engineer"])
def test_only_admins_reach_the_switch(app, client, auth, factory, role):
    user_id = factory.user(role, stores=[factory.store()])
    auth(user_id)
    assert client.get("/admin/maintenance/").status_code == 403
    response = client.post("/admin/maintenance/", data={
        "turn": "on", "confirm": "y", "csrf_token": csrf_from(client.get("/"))})
    assert response.status_code == 403
    assert not setting(app)


def test_anonymous_users_are_sent_to_sign_in(client):
    response = client.get("/admin/maintenance/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.filterwarnings("ignore:Yielding raw tuples from iter_choices:DeprecationWarning")
def test_the_settings_table_does_not_switch_it_behind_the_queue(app, client, auth, factory):
    admin_id = factory.user("admin")
    with app.app_context():  # the row exists once it was ever switched
        Setting.put("maintenance_mode", False)
        db.session.commit()
    auth(admin_id)
    url = "/admin/settings/edit/?id=maintenance_mode"
    form = client.get(url).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    response = client.post(url, data={"key": "maintenance_mode", "value": "true",
                                      "csrf_token": token})
    assert "Switch maintenance mode on the Maintenance page" in response.get_data(as_text=True)
    assert not setting(app)


# --- while it is on: accepted, queued, nothing changed --------------------------------------

def test_v1_cancel_is_queued_with_202_and_changes_nothing(app, client, factory,
                                                          maintenance_mode):
    shop = factory.shop(role="store_manager", points_earned=5, points_redeemed=10)
    before = order_state(app, shop["order_id"])

    response = cancel(client, shop["order_id"], shop["token"], notes="during maintenance")

    assert response.status_code == 202, response.json
    body = response.json
    out.ApprovalAccepted.model_validate(body)
    assert body["queued"] is True and body["status"] == "queued"
    assert body["status_url"] == f"/api/v1/cancel_jobs/{body['job_id']}"
    assert "queued" in body["message"] and "maintenance" in body["message"].lower()
    after = order_state(app, shop["order_id"])
    assert without_audit(after) == without_audit(before)
    assert after["audit_events"] == before["audit_events"] + 1  # the request is on record

    state = client.get(body["status_url"], headers=bearer(shop["token"]))
    assert state.status_code == 200
    out.CancelState.model_validate(state.json)
    assert state.json["status"] == "queued" and state.json["order_status"] == "pending"

    # The same request again (a double click, a retry) joins the waiting job.
    again = cancel(client, shop["order_id"], shop["token"], notes="during maintenance")
    assert again.status_code == 202 and again.json["job_id"] == body["job_id"]
    assert "already queued" in again.json["message"]
    other = cancel(client, shop["order_id"], shop["token"], reason="duplicate_order")
    assert other.status_code == 202 and other.json["job_id"] != body["job_id"]


def test_v2_cancel_is_queued_idempotently(app, client, factory, maintenance_mode):
    shop = factory.shop(role="ops_engineer")
    before = order_state(app, shop["order_id"])
    key = str(uuid.uuid4())

    first = v2_cancel(client, shop["order_id"], shop["token"], key=key)
    replay = v2_cancel(client, shop["order_id"], shop["token"], key=key)

    assert first.status_code == 202, first.json
    out.CancelAccepted.model_validate(first.json)
    assert first.json["status"] == "queued" and first.json["queued"] is True
    assert first.json["status_url"] == f"/api/v2/orders/{shop['order_id']}/cancel/status"
    assert replay.status_code == 202 and replay.json == first.json
    assert replay.headers.get("Idempotent-Replayed") == "true"
    other_body = client.post(f"/api/v2/orders/{shop['order_id']}/cancel",
                             json={**RUNBOOK_BODY, "notes": "other"},
                             headers=v2_headers(shop["token"], key=key))
    assert_api_error(other_body, 422)
    status = client.get(first.json["status_url"], headers=bearer(shop["token"]))
    assert status.json["status"] == "queued" and status.json["job_id"] == first.json["job_id"]
    assert without_audit(order_state(app, shop["order_id"])) == without_audit(before)


def test_panel_cancel_is_queued_with_a_flash_and_a_notice_on_the_order(app, client, auth, factory,
                                                                       maintenance_mode):
    shop = factory.shop(role="store_manager")
    before = order_state(app, shop["order_id"])
    auth(shop["user_id"])
    page = client.get(f"/orders/{shop['order_id']}")

    response = client.post(f"/orders/{shop['order_id']}/cancel", data={
        "csrf_token": csrf_from(page), "reason": "inventory_issues", "notify_customer": "y",
        "version": "1"}, follow_redirects=True)

    text = response.get_data(as_text=True)
    number = _number(app, shop["order_id"])
    assert f"Maintenance in progress: your cancellation of {number} is queued" in text
    assert "will be processed when maintenance ends" in text
    assert 'data-testid="queued-cancellation"' in text
    assert without_audit(order_state(app, shop["order_id"])) == without_audit(before)


def _number(app, order_id):
    with app.app_context():
        return db.session.get(Order, order_id).number


def test_what_can_be_known_now_is_still_answered_at_once(app, client, factory,
                                                        maintenance_mode):
    shop = factory.shop(role="store_manager")
    elsewhere = factory.shop(role="store_manager")
    support_t = factory.token(factory.user("customer_service", stores=[shop["store_id"]]))
    token, order_id = shop["token"], shop["order_id"]

    assert_api_error(cancel(client, order_id, token, reason="because"), 400, "validation_error")
    assert_api_error(cancel(client, order_id, token, scope="everything"), 400,
                     "validation_error")
    assert_api_error(cancel(client, order_id, token, reason="customer_requested"), 400,
                     "validation_error")  # contact details are required
    assert_api_error(client.put(f"/api/v1/orders/{order_id}/status", data="{not json",
                                headers=bearer(token)), 400, "validation_error")
    assert_api_error(cancel(client, elsewhere["order_id"], token), 404, "not_found")
    assert_api_error(cancel(client, 2147483000, token), 404)
    assert_api_error(cancel(client, order_id, support_t, reason="inventory_issues"), 403)
    ops_t = factory.token(factory.user("ops_engineer"))
    assert_api_error(v2_cancel(client, order_id, ops_t, reason="nope"), 400)
    assert_api_error(v2_cancel(client, order_id, ops_t, key=None), 400)
    assert_api_error(v2_cancel(client, 2147483000, ops_t), 404)
    assert_api_error(v2_cancel(client, order_id, shop["token"]), 403)  # no v2 for managers

    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(CancelJob).where(
            CancelJob.order_id.in_([order_id, elsewhere["order_id"]]))) == 0


def test_approving_and_reinstating_wait_for_the_end_of_maintenance(app, client, auth, factory,
                                                                   maintenance_mode):
    store_id = factory.store()
    product_id = factory.product(1000)
    factory.stock(store_id, product_id)
    in_progress = factory.order(store_id, [(product_id, 1, 1000)], status="in_progress")
    requester_t = factory.token(factory.user("fulfillment", stores=[store_id]))
    manager = factory.user("store_manager", stores=[store_id])
    manager_t = factory.token(manager)
    maintenance_mode(False)
    filed = client.post(f"/api/v1/orders/{in_progress}/approval_request", json={
        "justification": "customer moved", "reason": "inventory_issues"},
        headers=bearer(requester_t))
    assert filed.status_code == 201, filed.json
    approval_id = filed.json["approval_request"]["id"]
    cancelled = factory.order(store_id, [(product_id, 1, 1000)], paid=False)
    ops_t = factory.token(factory.user("ops_engineer"))
    assert cancel(client, cancelled, manager_t).status_code == 200
    maintenance_mode(True)
    before = order_state(app, in_progress)

    approve = client.post(f"/api/v1/approval_requests/{approval_id}/approve", json={},
                          headers=bearer(manager_t))
    error = assert_api_error(approve, 503, "maintenance_mode")
    assert "Approval requests stay open" in error["message"]
    assert order_state(app, in_progress) == before
    with app.app_context():
        assert db.session.get(ApprovalRequest, approval_id).status == "pending"

    key = str(uuid.uuid4())
    reinstate = client.post(f"/api/v2/orders/{cancelled}/reinstate",
                            json={"reason": "rollback"}, headers=v2_headers(ops_t, key=key))
    assert_api_error(reinstate, 503, "maintenance_mode")
    assert effects(app, cancelled)["status"] == "cancelled"

    # The panel's approve button says why too.
    auth(manager)
    page = client.get("/approvals")
    response = client.post(f"/approvals/{approval_id}/approve", data={
        "csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "Maintenance is in progress" in response.get_data(as_text=True)

    # Rejecting changes no order: it goes on.
    rejected = client.post(f"/api/v1/approval_requests/{approval_id}/reject",
                           json={"comment": "not now"}, headers=bearer(manager_t))
    assert rejected.status_code == 200

    maintenance_mode(False)  # the idempotency key was not used up by the 503
    again = client.post(f"/api/v2/orders/{cancelled}/reinstate",
                        json={"reason": "rollback"}, headers=v2_headers(ops_t, key=key))
    assert again.status_code == 200, again.json


# --- when it ends: processed by the worker, exactly once -------------------------------------

def test_ending_maintenance_processes_the_queue_exactly_once(app, client, auth, factory, worker,
                                                              maintenance_mode):
    store_id = factory.store()
    product_id = factory.product(2000)
    factory.stock(store_id, product_id, on_hand=50)
    customer_id = factory.customer(points=100)

    def order(**kw):
        return factory.order(store_id, [(product_id, 2, 2000)], customer_id=customer_id, **kw)

    manager = factory.user("store_manager", stores=[store_id])
    manager_t = factory.token(manager)
    ops_t = factory.token(factory.user("ops_engineer"))
    fulfillment_t = factory.token(factory.user("fulfillment", stores=[store_id]))
    via_v1, via_v2, via_panel, held, needs_approval = (
        order(points_redeemed=20), order(), order(), order(), order(status="in_progress"))
    assert reserved(app, store_id, product_id) == 10

    v1_job = cancel(client, via_v1, manager_t).json["job_id"]
    v2_job = v2_cancel(client, via_v2, ops_t).json["job_id"]
    auth(manager)
    page = client.get(f"/orders/{via_panel}")
    client.post(f"/orders/{via_panel}/cancel", data={
        "csrf_token": csrf_from(page), "reason": "inventory_issues", "version": "1"})
    held_job = cancel(client, held, manager_t).json["job_id"]
    approval_job = cancel(client, needs_approval, fulfillment_t).json["job_id"]
    with app.app_context():
        panel_job = db.session.scalar(db.select(CancelJob.id).where(
            CancelJob.order_id == via_panel))
        # Meanwhile a billing hold is put on one of them: it is decided when it runs.
        db.session.get(Order, held).billing_hold = True
        db.session.commit()
    assert reserved(app, store_id, product_id) == 10  # nothing returned yet

    maintenance_mode(False)

    for job_id in (v1_job, v2_job, panel_job):
        assert wait_job(app, job_id)["status"] == "completed"
    failed = wait_job(app, held_job)
    assert failed["status"] == "failed" and failed["error_code"] == "billing_hold_active"
    assert wait_job(app, approval_job)["status"] == "pending_approval"
    for order_id in (via_v1, via_v2, via_panel):
        assert effects(app, order_id) == {"cancellations": 1, "refunds": 1,
                                          "status": "cancelled"}
    assert effects(app, held) == {"cancellations": 0, "refunds": 0, "status": "pending"}
    assert effects(app, needs_approval)["status"] == "in_progress"
    assert reserved(app, store_id, product_id) == 4  # 3 orders x 2 units back, once

    # The outcomes, where their requesters look.
    v1_state = client.get(f"/api/v1/cancel_jobs/{held_job}", headers=bearer(manager_t))
    out.CancelState.model_validate(v1_state.json)
    assert v1_state.json["status"] == "failed"
    assert v1_state.json["error"]["code"] == "billing_hold_active"
    v2_state = client.get(f"/api/v2/orders/{via_v2}/cancel/status", headers=bearer(ops_t))
    assert v2_state.json["status"] == "completed" and v2_state.json["cancellation_id"]
    detail = client.get(f"/orders/{held}").get_data(as_text=True)
    assert 'data-status="failed"' in detail and "billing_hold_active" in detail
    assert 'data-testid="queued-cancellation"' not in detail
    approval = client.get(f"/api/v1/cancel_jobs/{approval_job}",
                          headers=bearer(fulfillment_t)).json
    assert approval["status"] == "pending_approval" and approval["approval_request_id"]

    # Running the release again (by hand, and by the beat meanwhile) changes nothing.
    with app.app_context():
        assert maintenance.release_queued()["release_cancel_jobs"] == 0
    for order_id in (via_v1, via_v2, via_panel):
        assert effects(app, order_id)["cancellations"] == 1
    assert reserved(app, store_id, product_id) == 4


def test_a_job_is_only_shown_to_its_requester_and_admins(app, client, factory,
                                                         maintenance_mode):
    shop = factory.shop(role="store_manager")
    job_id = cancel(client, shop["order_id"], shop["token"]).json["job_id"]
    colleague_t = factory.token(factory.user("store_manager", stores=[shop["store_id"]]))
    admin_t = factory.token(factory.user("admin"))

    assert client.get(f"/api/v1/cancel_jobs/{job_id}",
                      headers=bearer(shop["token"])).status_code == 200
    assert client.get(f"/api/v1/cancel_jobs/{job_id}", headers=bearer(admin_t)).json[
        "status"] == "queued"
    assert_api_error(client.get(f"/api/v1/cancel_jobs/{job_id}", headers=bearer(colleague_t)),
                     404)
    assert_api_error(client.get("/api/v1/cancel_jobs/2147483000", headers=bearer(admin_t)), 404)
    assert_api_error(client.get(f"/api/v1/cancel_jobs/{job_id}"), 401)


def test_two_releasers_at_once_run_each_job_once(app, client, factory, worker,
                                                 maintenance_mode):
    shop, orders, job_ids = queued_cancels(client, factory, 6)
    store_id, product_id = shop["store_id"], shop["product_id"]

    with app.app_context():  # off without the message to the workers: we release ourselves
        Setting.put("maintenance_mode", False)
        db.session.commit()
    barrier = threading.Barrier(3)
    results, errors = [], []

    def release():
        try:
            with app.app_context():
                barrier.wait()
                results.append(maintenance.release_queued())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=release) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    for job_id in job_ids:
        assert wait_job(app, job_id)["status"] == "completed"
    for order_id in orders:
        assert effects(app, order_id) == {"cancellations": 1, "refunds": 1,
                                          "status": "cancelled"}
    assert reserved(app, store_id, product_id) == 0
    assert len(results) == 3 and all("release_cancel_jobs" in r for r in results)


def test_a_lost_release_message_is_made_up_by_the_beat(app, client, factory, worker,
                                                       maintenance_mode):
    shop = factory.shop(role="admin")
    job_id = cancel(client, shop["order_id"], shop["token"]).json["job_id"]
    with app.app_context():  # switched off without telling the workers
        Setting.put("maintenance_mode", False)
        db.session.commit()
    assert wait_job(app, job_id)["status"] == "completed"
    assert effects(app, shop["order_id"])["cancellations"] == 1


def test_a_job_handed_over_before_the_switch_waits_for_the_end(app, factory, maintenance_mode):
    """A v2 job sent to a worker just before maintenance began is put back in the queue."""
    from cancellation import jobs

    shop = factory.shop(role="ops_engineer")
    with app.app_context():
        job = CancelJob(order_id=shop["order_id"], user_id=shop["user_id"],
                        payload={"reason": "operational_request", "notes": None,
                                 "notify_customer": True, "request_contact": None,
                                 "request_channel": None, "requested_at": None,
                                 "scope": "this_instance"}, source="api_v2")
        db.session.add(job)
        db.session.commit()
        assert jobs.run_cancel_job(job.id) == "queued"
        assert db.session.get(CancelJob, job.id).attempts == 0
    assert effects(app, shop["order_id"])["status"] == "pending"


def test_no_cancellation_is_performed_while_on_whatever_the_path(app, factory,
                                                                 maintenance_mode):
    from cancellation import CancelRequest, cancel_order
    from cancellation.maintenance import MaintenanceInProgress

    shop = factory.shop(role="admin")
    with app.app_context():
        with pytest.raises(MaintenanceInProgress) as caught:
            cancel_order(shop["order_id"], db.session.get(User, shop["user_id"]),
                         CancelRequest(reason="inventory_issues"))
        assert caught.value.status == 503
    assert effects(app, shop["order_id"])["status"] == "pending"


def test_no_reinstatement_is_performed_while_on_whatever_the_path(app, client, factory,
                                                                   maintenance_mode):
    """The domain refuses (not only API v2's route): every caller gets the same 503."""
    from cancellation import CancelDeskError
    from cancellation.maintenance import MaintenanceInProgress
    from cancellation.reinstate import reinstate_order

    shop = factory.shop(role="admin", paid=False)
    ops_t = factory.token(factory.user("ops_engineer"))
    outsider = factory.user("store_manager", stores=[factory.store()])
    maintenance_mode(False)
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200
    maintenance_mode(True)
    before = order_state(app, shop["order_id"])

    with app.app_context():
        with pytest.raises(MaintenanceInProgress) as caught:
            reinstate_order(shop["order_id"], db.session.get(User, shop["user_id"]),
                            reason="rollback")
    assert caught.value.status == 503 and caught.value.code == "maintenance_mode"
    assert caught.value.message == ("Maintenance is in progress: orders are not reinstated "
                                    "until it ends, so nothing was changed. Ask again once "
                                    "maintenance is over.")
    response = client.post(f"/api/v2/orders/{shop['order_id']}/reinstate",
                           json={"reason": "rollback"},
                           headers=v2_headers(ops_t, key=str(uuid.uuid4())))
    assert assert_api_error(response, 503, "maintenance_mode")["message"] == caught.value.message
    assert order_state(app, shop["order_id"]) == before

    # What does not depend on maintenance is answered first: an order one cannot see is 404.
    with app.app_context():
        with pytest.raises(CancelDeskError) as hidden:
            reinstate_order(shop["order_id"], db.session.get(User, outsider), reason="rollback")
    assert hidden.value.status == 404

    maintenance_mode(False)
    with app.app_context():
        order = reinstate_order(shop["order_id"], db.session.get(User, shop["user_id"]),
                                reason="rollback")
        assert order.status == "pending"


def test_malformed_bodies_during_maintenance_are_400s(client, factory, maintenance_mode):
    shop = factory.shop(role="admin")
    url = f"/api/v1/orders/{shop['order_id']}/status"
    for raw in ("[]", "null", '{"status": "cancelled", "reason": "inventory_issues", '
                "\"notes\": \"a\\u0000b\"}", '{"status": "cancelled", "reason": 7}',
                '{"status": "cancelled", "reason": "inventory_issues", "version": "1"}',
                "x" * 10):
        response = client.put(url, data=raw, headers=bearer(shop["token"],
                                                            **{"Content-Type":
                                                               "application/json"}))
        assert_api_error(response, 400)


def test_the_openapi_document_describes_the_queue(client):
    document = client.get("/api/openapi.json").json
    job = document["paths"]["/api/v1/cancel_jobs/{job_id}"]["get"]
    assert job["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CancelState")
    approve = document["paths"]["/api/v1/approval_requests/{approval_id}/approve"]["post"]
    assert "503" in approve["responses"]
    accepted = document["components"]["schemas"]["ApprovalAccepted"]["properties"]
    assert {"queued", "job_id", "status_url"} <= set(accepted)
