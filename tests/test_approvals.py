"""The approval workflow through API v1 (SPEC §3, seed A2): request, route, approve, reject,
stale, expired, escalated, self-approval — with a real worker delivering the e-mails."""
from datetime import timedelta

import pytest

from models import (
    ApprovalRequest,
    AuditEvent,
    Cancellation,
    MailMessage,
    Order,
    Refund,
    Setting,
    User,
    db,
    utcnow,
)
from models.cancellation import ApprovalNotice

from conftest import assert_api_error, bearer, cancel, order_state, wait_for

JUSTIFICATION = "Customer called twice; the batch was recalled by the supplier."


def ask(client, order_id, token, **body):
    payload = {"justification": JUSTIFICATION, "reason": "inventory_issues",
               "notes": "Recall #42", **body}
    return client.post(f"/api/v1/orders/{order_id}/approval_request", json=payload,
                       headers=bearer(token))


def approve(client, approval_id, token, comment=None):
    body = {} if comment is None else {"comment": comment}
    return client.post(f"/api/v1/approval_requests/{approval_id}/approve", json=body,
                       headers=bearer(token))


def reject(client, approval_id, token, comment="Not this one."):
    body = {} if comment is None else {"comment": comment}
    return client.post(f"/api/v1/approval_requests/{approval_id}/reject", json=body,
                       headers=bearer(token))


def staffed_shop(factory, *, requester="fulfillment", status="in_progress", managers=1,
                 **order_kw):
    """A shop whose order needs approval from `requester`, with `managers` store managers."""
    shop = factory.shop(role=requester, status=status, **order_kw)
    shop["managers"] = [factory.user("store_manager", stores=[shop["store_id"]])
                        for _ in range(managers)]
    shop["manager_tokens"] = [factory.token(m) for m in shop["managers"]]
    return shop


def request_row(app, approval_id):
    with app.app_context():
        approval = db.session.get(ApprovalRequest, approval_id)
        return {"status": approval.status, "decided_by": approval.decided_by_id,
                "comment": approval.comment, "detail": approval.status_detail,
                "cancellation_id": approval.cancellation_id,
                "routed": approval.routed_at is not None}


def mail_to(app, user_id, subject_part):
    with app.app_context():
        email = db.session.get(User, user_id).email
        return db.session.scalars(db.select(MailMessage).where(
            MailMessage.recipient == email,
            MailMessage.subject.contains(subject_part))).all()


def actions_for(app, approval_id):
    with app.app_context():
        return [e.action for e in db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.target_type == "approval_request",
            AuditEvent.target_id == str(approval_id)).order_by(AuditEvent.seq))]


@pytest.fixture
def admin(factory):
    user_id = factory.user("admin")
    return {"id": user_id, "token": factory.token(user_id)}


# --- asking ----------------------------------------------------------------------------------

def test_request_needs_a_justification_and_files_the_exact_cancellation(app, client, factory):
    shop = staffed_shop(factory)
    for body in ({"justification": ""}, {"justification": "   "}, {"justification": None}):
        assert_api_error(ask(client, shop["order_id"], shop["token"], **body), 400,
                         "validation_error")
    response = client.post(f"/api/v1/orders/{shop['order_id']}/approval_request",
                           json={"reason": "inventory_issues"}, headers=bearer(shop["token"]))
    error = assert_api_error(response, 400, "validation_error")
    assert "justification" in error["message"]
    assert order_state(app, shop["order_id"])["approval_requests"] == 0

    response = ask(client, shop["order_id"], shop["token"], notify_customer=False, version=1)
    assert response.status_code == 201, response.json
    approval = response.json["approval_request"]
    assert approval["status"] == "pending" and response.json["created"] is True
    assert approval["justification"] == JUSTIFICATION
    assert approval["requested_cancellation"]["reason"] == "inventory_issues"
    assert approval["requested_cancellation"]["notes"] == "Recall #42"
    assert approval["requested_cancellation"]["notify_customer"] is False
    assert approval["order_version"] == 1 and approval["expires_at"]
    assert any("Fulfillment has started" in why for why in approval["why"])
    assert order_state(app, shop["order_id"])["status"] == "in_progress"

    again = ask(client, shop["order_id"], shop["token"])
    assert again.status_code == 200 and again.json["created"] is False
    assert again.json["approval_request"]["id"] == approval["id"]
    assert "approval.requested" in actions_for(app, approval["id"])


def test_request_checks_run_in_the_spec_order(app, client, factory):
    shop = staffed_shop(factory)
    other_store = factory.shop(role="fulfillment", status="in_progress")
    assert_api_error(ask(client, other_store["order_id"], shop["token"]), 404, "not_found")
    manager_shop = factory.shop(role="store_manager")
    assert_api_error(ask(client, manager_shop["order_id"], manager_shop["token"]), 409,
                     "approval_not_required")
    done = factory.shop(role="fulfillment", status="completed")
    assert_api_error(ask(client, done["order_id"], done["token"]), 400, "invalid_state")
    hold = factory.shop(role="fulfillment", status="in_progress", billing_hold=True)
    assert_api_error(ask(client, hold["order_id"], hold["token"]), 409, "billing_hold_active")
    support = factory.shop(role="customer_service", status="in_progress")
    assert_api_error(ask(client, support["order_id"], support["token"]), 403, "forbidden")
    assert_api_error(ask(client, shop["order_id"], shop["token"], version=7), 409,
                     "concurrent_modification")
    assert_api_error(ask(client, shop["order_id"], shop["token"], reason="nope"), 400,
                     "validation_error")
    with app.app_context():
        item_id = db.session.get(Order, shop["order_id"]).items[0].id
    assert_api_error(ask(client, shop["order_id"], shop["token"],
                         items=[{"item_id": item_id, "quantity": 1}]), 400, "validation_error")
    whole = ask(client, shop["order_id"], shop["token"], items=[{"item_id": item_id,
                                                                "quantity": 2}])
    assert whole.status_code == 201, whole.json


# --- routing and notices ---------------------------------------------------------------------

def test_approvers_are_notified_by_email_and_in_app(app, client, factory, worker, admin):
    shop = staffed_shop(factory, managers=2)
    inactive = factory.user("store_manager", stores=[shop["store_id"]], active=False)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]

    for manager in shop["managers"]:
        mails = wait_for(lambda m=manager: mail_to(app, m, "Approval needed"), timeout=30,
                         message="the approver's e-mail")
        assert len(mails) == 1
        body = mails[0].body
        assert JUSTIFICATION in body and "Fulfillment has started" in body
        assert "customer-" not in body  # no customer data in staff e-mails
    wait_for(lambda: mail_to(app, admin["id"], "Approval needed"), timeout=30,
             message="the admin's e-mail")
    assert mail_to(app, inactive, "Approval needed") == []
    assert mail_to(app, shop["user_id"], "Approval needed") == []  # not the requester
    assert request_row(app, approval["id"])["routed"]
    assert request_row(app, approval["id"])["status"] == "pending"
    with app.app_context():
        notices = db.session.scalars(db.select(ApprovalNotice).where(
            ApprovalNotice.approval_request_id == approval["id"])).all()
        assert {n.status for n in notices} == {"succeeded"}
        assert len({n.idempotency_key for n in notices}) == len(notices)


def test_no_active_manager_escalates_to_admins(app, client, factory, worker, admin):
    shop = staffed_shop(factory, managers=0)
    factory.user("store_manager", stores=[shop["store_id"]], active=False)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]

    wait_for(lambda: request_row(app, approval["id"])["status"] == "escalated", timeout=30,
             message="the escalation")
    mails = wait_for(lambda: mail_to(app, admin["id"], "Escalated"), timeout=30,
                     message="the admins' e-mail")
    assert "No active store manager" in mails[0].body
    assert "approval.escalated" in actions_for(app, approval["id"])
    got = client.get(f"/api/v1/approval_requests/{approval['id']}",
                     headers=bearer(admin["token"]))
    assert got.json["approval_request"]["status"] == "escalated"
    assert got.json["approval_request"]["escalated_at"]

    # An admin decides an escalated request like any other.
    response = approve(client, approval["id"], admin["token"])
    assert response.status_code == 200, response.json
    assert order_state(app, shop["order_id"])["status"] == "cancelled"


# --- approving -------------------------------------------------------------------------------

def test_approve_performs_the_stored_cancellation_as_the_approver(app, client, factory,
                                                                  worker):
    shop = staffed_shop(factory, points_earned=20, points_redeemed=50)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    manager, token = shop["managers"][0], shop["manager_tokens"][0]

    response = approve(client, approval["id"], token, comment="Go ahead.")
    assert response.status_code == 200, response.json
    decided = response.json["approval_request"]
    assert decided["status"] == "approved" and decided["decided_by"] == manager
    assert decided["comment"] == "Go ahead." and decided["cancellation_id"]
    assert response.json["order"]["status"] == "cancelled"

    with app.app_context():
        cancellation = db.session.get(Cancellation, decided["cancellation_id"])
        assert cancellation.actor_id == manager  # performed AS the approver
        assert cancellation.reason == "inventory_issues" and cancellation.notes == "Recall #42"
        assert cancellation.points_restored == 50 and cancellation.points_reversed == 20
        assert cancellation.refund_cents == 5500
        event = db.session.scalar(db.select(AuditEvent).where(
            AuditEvent.action == "order.cancelled", AuditEvent.order_id == shop["order_id"]))
        assert event.actor_id == manager
    state = order_state(app, shop["order_id"])
    assert state["stock"] == [(shop["product_id"], 50, 0)]  # the reservation was released
    wait_for(lambda: _refund_status(app, shop["order_id"]) == "succeeded", timeout=30,
             message="the refund")
    mails = wait_for(lambda: mail_to(app, shop["user_id"], "Approved"), timeout=30,
                     message="the requester's e-mail")
    assert "Go ahead." in mails[0].body
    assert actions_for(app, approval["id"]) == ["approval.requested", "approval.approved"]

    # Deciding twice changes nothing.
    again = approve(client, approval["id"], token)
    assert_api_error(again, 409, "approval_closed")
    assert_api_error(reject(client, approval["id"], token), 409, "approval_closed")


def _refund_status(app, order_id):
    with app.app_context():
        refund = db.session.scalar(db.select(Refund).where(Refund.order_id == order_id))
        return refund.status if refund else None


def test_a_requester_never_approves_their_own_request(app, client, factory, worker):
    # A store manager asking about an order older than 30 days (only an admin cancels it).
    shop = staffed_shop(factory, requester="store_manager", status="pending", age_days=40)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    # Routing (which may escalate, an audited step) runs in the worker: let it finish first,
    # so the snapshot below only changes if the refused decision changed something.
    wait_for(lambda: request_row(app, approval["id"])["routed"],
             message="the request to be routed to its approvers")
    before = order_state(app, shop["order_id"])
    error = assert_api_error(approve(client, approval["id"], shop["token"]), 403,
                             "self_approval")
    assert "own" in error["message"]
    assert_api_error(reject(client, approval["id"], shop["token"]), 403, "self_approval")
    assert order_state(app, shop["order_id"]) == before
    assert request_row(app, approval["id"])["status"] in ("pending", "escalated")


def test_a_manager_cannot_approve_what_needs_an_admin(app, client, factory, admin):
    shop = staffed_shop(factory, status="pending", age_days=45)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    error = assert_api_error(approve(client, approval["id"], shop["manager_tokens"][0]), 403,
                             "approver_lacks_authority")
    assert "30 days" in error["message"] and "admin" in error["message"]
    assert request_row(app, approval["id"])["status"] == "escalated"
    assert order_state(app, shop["order_id"])["status"] == "pending"

    response = approve(client, approval["id"], admin["token"])
    assert response.status_code == 200, response.json
    with app.app_context():
        assert db.session.get(Cancellation, response.json["approval_request"]
                              ["cancellation_id"]).actor_id == admin["id"]


def test_only_approvers_of_the_store_decide(app, client, factory):
    shop = staffed_shop(factory)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    colleague = factory.user("fulfillment", stores=[shop["store_id"]])
    assert_api_error(approve(client, approval["id"], factory.token(colleague)), 403)
    support = factory.user("customer_service", stores=[shop["store_id"]])
    assert_api_error(reject(client, approval["id"], factory.token(support)), 403)
    elsewhere = factory.user("store_manager", stores=[factory.store()])
    assert_api_error(approve(client, approval["id"], factory.token(elsewhere)), 404,
                     "not_found")
    assert_api_error(approve(client, 2147483000, shop["manager_tokens"][0]), 404, "not_found")
    assert_api_error(client.post(f"/api/v1/approval_requests/{approval['id']}/approve"), 401)
    assert request_row(app, approval["id"])["status"] == "pending"


def test_a_changed_order_makes_the_request_stale(app, client, factory, worker):
    shop = staffed_shop(factory)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    with app.app_context():
        order = db.session.get(Order, shop["order_id"])
        order.shipment_status = "preparing"  # any change bumps the version
        db.session.commit()
    before = order_state(app, shop["order_id"])

    error = assert_api_error(approve(client, approval["id"], shop["manager_tokens"][0]), 409,
                             "approval_stale")
    assert "changed" in error["message"] and error["current_version"] == 2
    assert order_state(app, shop["order_id"])["status"] == "in_progress"
    after = order_state(app, shop["order_id"])
    assert {k: v for k, v in after.items() if k != "audit_events"} == \
        {k: v for k, v in before.items() if k != "audit_events"}
    row = request_row(app, approval["id"])
    assert row["status"] == "stale" and "version 1 → 2" in row["detail"]
    assert "approval.stale" in actions_for(app, approval["id"])
    wait_for(lambda: mail_to(app, shop["user_id"], "Outdated"), timeout=30,
             message="the requester's e-mail")
    assert_api_error(approve(client, approval["id"], shop["manager_tokens"][0]), 409,
                     "approval_closed")


def test_a_cancelled_order_makes_the_other_requests_stale(app, client, factory):
    shop = staffed_shop(factory)
    colleague = factory.user("fulfillment", stores=[shop["store_id"]])
    first = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    second = ask(client, shop["order_id"], factory.token(colleague)).json["approval_request"]
    assert first["id"] != second["id"]
    assert approve(client, first["id"], shop["manager_tokens"][0]).status_code == 200
    row = request_row(app, second["id"])
    assert row["status"] == "stale" and "cancelled" in row["detail"]


# --- rejecting -------------------------------------------------------------------------------

def test_reject_needs_a_comment_and_leaves_the_order_untouched(app, client, factory, worker):
    shop = staffed_shop(factory)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    before = order_state(app, shop["order_id"])
    token = shop["manager_tokens"][0]
    for comment in (None, "", "   "):
        assert_api_error(reject(client, approval["id"], token, comment=comment), 400,
                         "validation_error")
    assert request_row(app, approval["id"])["status"] == "pending"

    response = reject(client, approval["id"], token, comment="Customer picked it up already.")
    assert response.status_code == 200, response.json
    assert response.json["approval_request"]["status"] == "rejected"
    assert response.json["order"]["status"] == "in_progress"
    after = order_state(app, shop["order_id"])
    assert {k: v for k, v in after.items() if k != "audit_events"} == \
        {k: v for k, v in before.items() if k != "audit_events"}
    row = request_row(app, approval["id"])
    assert row["comment"] == "Customer picked it up already."
    assert row["decided_by"] == shop["managers"][0]
    assert actions_for(app, approval["id"])[-1] == "approval.rejected"
    mails = wait_for(lambda: mail_to(app, shop["user_id"], "Rejected"), timeout=30,
                     message="the requester's e-mail")
    assert "Customer picked it up already." in mails[0].body


# --- expiry ----------------------------------------------------------------------------------

def test_requests_expire_after_the_configured_time(app, client, factory, worker):
    shop = staffed_shop(factory)
    with app.app_context():
        Setting.put("approval_expiry_hours", 2)
        db.session.commit()
    try:
        approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    finally:
        with app.app_context():
            db.session.delete(db.session.get(Setting, "approval_expiry_hours"))
            db.session.commit()
    with app.app_context():
        row = db.session.get(ApprovalRequest, approval["id"])
        assert row.expires_at - row.created_at == timedelta(hours=2)
        row.expires_at = utcnow() - timedelta(seconds=1)  # as if two hours had passed
        db.session.commit()

    # The beat task (every second in tests) lapses it, audited, and tells the requester.
    wait_for(lambda: request_row(app, approval["id"])["status"] == "expired", timeout=30,
             message="the expiry task")
    assert "approval.expired" in actions_for(app, approval["id"])
    wait_for(lambda: mail_to(app, shop["user_id"], "Expired"), timeout=30,
             message="the requester's e-mail")
    assert_api_error(approve(client, approval["id"], shop["manager_tokens"][0]), 409,
                     "approval_closed")
    assert order_state(app, shop["order_id"])["status"] == "in_progress"


def test_approving_a_lapsed_request_fails_and_expires_it(app, client, factory):
    shop = staffed_shop(factory)
    approval = ask(client, shop["order_id"], shop["token"]).json["approval_request"]
    with app.app_context():
        db.session.get(ApprovalRequest, approval["id"]).expires_at = utcnow() - timedelta(
            minutes=1)
        db.session.commit()
    assert_api_error(approve(client, approval["id"], shop["manager_tokens"][0]), 409,
                     "approval_expired")
    assert request_row(app, approval["id"])["status"] == "expired"
    assert order_state(app, shop["order_id"])["status"] == "in_progress"


# --- the plain cancel call files the same kind of request ------------------------------------

def test_put_status_files_a_request_that_approvers_can_approve(app, client, factory):
    shop = staffed_shop(factory)
    response = cancel(client, shop["order_id"], shop["token"], notes="via PUT")
    assert response.status_code == 202
    approval = response.json["approval_request"]
    assert approval["status"] == "pending"
    # Filing through the approval form afterwards adds the justification to the same request.
    again = ask(client, shop["order_id"], shop["token"])
    assert again.json["approval_request"]["id"] == approval["id"]
    assert again.json["approval_request"]["justification"] == JUSTIFICATION
    decided = approve(client, approval["id"], shop["manager_tokens"][0])
    assert decided.status_code == 200, decided.json
    with app.app_context():
        assert db.session.get(Cancellation, decided.json["approval_request"]
                              ["cancellation_id"]).notes == "via PUT"
