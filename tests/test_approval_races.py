"""Every transition of an approval request is a compare-and-set that exactly one caller wins.

Two managers deciding one request at the same moment (approve and reject, or both approving),
a decision racing the expiry sweep, two workers routing one request: the competing calls are
released together by a barrier, and exactly one of them changes the request; the other answers
409 `approval_closed` (or, for a worker, does nothing) and changes nothing. On SQLite, where
SELECT ... FOR UPDATE is a no-op, as on PostgreSQL.
"""
import time
from datetime import timedelta

from cancellation.audit import verify_chain
from models import ApprovalRequest, AuditEvent, Cancellation, Order, Refund, db, utcnow
from test_approvals import JUSTIFICATION, ask, request_row, staffed_shop

from conftest import bearer
from helpers import answer, in_app, race

ROUNDS = 4


def filed_request(app, client, factory, managers=2):
    shop = staffed_shop(factory, managers=managers)
    response = ask(client, shop["order_id"], shop["token"])
    assert response.status_code == 201, response.get_data(as_text=True)
    shop["approval_id"] = response.json["approval_request"]["id"]
    return shop


def effects(app, shop):
    with app.app_context():
        order = db.session.get(Order, shop["order_id"])
        return {
            "order_status": order.status,
            "cancellations": db.session.scalar(db.select(db.func.count()).select_from(
                Cancellation).where(Cancellation.order_id == order.id)),
            "refunds": db.session.scalar(db.select(db.func.count()).select_from(Refund).where(
                Refund.order_id == order.id)),
            "decisions": db.session.scalars(db.select(AuditEvent.action).where(
                AuditEvent.target_type == "approval_request",
                AuditEvent.target_id == str(shop["approval_id"]),
                AuditEvent.action.in_(("approval.approved", "approval.rejected",
                                       "approval.expired", "approval.stale")))).all(),
        }


def codes(responses):
    return sorted(answer(r) for r in responses)


def decide(app, shop, action, token, **body):
    """One contender for `race`: POST the request's `action` (approve, reject, withdraw) as the
    holder of `token`. A function, so that each round's contenders hold that round's values."""
    path = f"/api/v1/approval_requests/{shop['approval_id']}/{action}"
    return lambda: app.test_client().post(path, json=body, headers=bearer(token))


def test_approve_and_reject_at_once_exactly_one_wins(app, factory):
    outcomes = set()
    for _ in range(ROUNDS):
        client = app.test_client()
        shop = filed_request(app, client, factory)
        approver, rejecter = shop["manager_tokens"]
        results = race(decide(app, shop, "approve", approver),
                       decide(app, shop, "reject", rejecter, comment="No."))
        assert not [r for r in results if isinstance(r, Exception)], results
        assert codes(results) in ([(200, None), (409, "approval_closed")],), \
            [r.get_data(as_text=True) for r in results]
        row = request_row(app, shop["approval_id"])
        seen = effects(app, shop)
        if results[0].status_code == 200:  # the approve won
            assert row["status"] == "approved" and row["cancellation_id"] is not None
            assert seen["order_status"] == "cancelled" and seen["cancellations"] == 1
            assert seen["decisions"] == ["approval.approved"]
        else:  # the reject won: the order was not touched
            assert row["status"] == "rejected" and row["comment"] == "No."
            assert seen["order_status"] == "in_progress"
            assert seen["cancellations"] == 0 and seen["refunds"] == 0
            assert seen["decisions"] == ["approval.rejected"]
        outcomes.add(row["status"])
    with app.app_context():
        assert verify_chain().ok


def test_two_approvers_at_once_cancel_the_order_once(app, factory):
    for _ in range(ROUNDS):
        client = app.test_client()
        shop = filed_request(app, client, factory)
        results = race(*[decide(app, shop, "approve", token) for token in shop["manager_tokens"]])
        assert codes(results) == [(200, None), (409, "approval_closed")], \
            [r.get_data(as_text=True) for r in results]
        seen = effects(app, shop)
        assert seen["order_status"] == "cancelled"
        assert seen["cancellations"] == 1 and seen["refunds"] == 1
        assert seen["decisions"] == ["approval.approved"]


def test_two_rejections_at_once_record_one_decision(app, factory):
    shop = filed_request(app, app.test_client(), factory)
    results = race(*[decide(app, shop, "reject", token, comment=f"No ({n}).")
                     for n, token in enumerate(shop["manager_tokens"])])
    assert codes(results) == [(200, None), (409, "approval_closed")]
    assert effects(app, shop)["decisions"] == ["approval.rejected"]
    winner = [r for r in results if r.status_code == 200][0]
    assert (request_row(app, shop["approval_id"])["comment"]
            == winner.json["approval_request"]["comment"])


def test_a_decision_racing_the_expiry_sweep_ends_one_way(app, factory):
    from cancellation import approvals

    for _ in range(ROUNDS):
        shop = filed_request(app, app.test_client(), factory)
        with app.app_context():
            # Lapses in a moment: the reject and the sweep both see it open.
            db.session.execute(db.update(ApprovalRequest).where(
                ApprovalRequest.id == shop["approval_id"]).values(
                expires_at=utcnow() + timedelta(milliseconds=5)))
            db.session.commit()

        def sweep():
            time.sleep(0.01)
            with app.app_context():
                return approvals.expire_overdue()

        results = race(decide(app, shop, "reject", shop["manager_tokens"][0], comment="No."),
                       sweep)
        assert not [r for r in results if isinstance(r, Exception)], results
        decisions = effects(app, shop)["decisions"]
        assert len(decisions) == 1, decisions
        status = request_row(app, shop["approval_id"])["status"]
        if results[0].status_code == 200:
            assert status == "rejected" and results[1] == 0
        else:
            assert results[0].status_code == 409
            assert results[0].json["error"]["code"] in ("approval_closed", "approval_expired")
            assert status == "expired"


def unrouted(app, shop):
    """A pending request written straight to the database: no routing task was sent for it,
    and it is out of the sweep's sight (created in the future), so only the test routes it."""
    with app.app_context():
        order = db.session.get(Order, shop["order_id"])
        approval = ApprovalRequest(
            order_id=order.id, requested_by_id=shop["user_id"], justification=JUSTIFICATION,
            payload={"reason": "inventory_issues", "notes": "", "notify_customer": True},
            why=["in progress"], order_version=order.version, status="pending",
            created_at=utcnow() + timedelta(hours=1),
            expires_at=utcnow() + timedelta(hours=48))
        db.session.add(approval)
        db.session.commit()
        return approval.id


def test_two_workers_routing_one_request_notify_the_approvers_once(app, factory):
    from cancellation import approvals
    from models.cancellation import ApprovalNotice

    shop = staffed_shop(factory, managers=1)
    approval_id = unrouted(app, shop)

    route = in_app(app, approvals.route, approval_id)
    results = race(route, route, route)
    assert sorted(results) == ["nothing_to_do", "nothing_to_do", "routed"], results
    with app.app_context():
        notices = db.session.scalars(db.select(ApprovalNotice.user_id).where(
            ApprovalNotice.approval_request_id == approval_id,
            ApprovalNotice.event == "requested")).all()
    assert sorted(notices) == sorted(set(notices)) and shop["managers"][0] in notices


def test_two_workers_escalating_one_request_audit_it_once(app, factory):
    from cancellation import approvals

    shop = staffed_shop(factory, managers=0)
    approval_id = unrouted(app, shop)

    route = in_app(app, approvals.route, approval_id)
    results = race(route, route, route)
    assert sorted(results) == ["escalated", "nothing_to_do", "nothing_to_do"], results
    with app.app_context():
        escalations = db.session.scalar(db.select(db.func.count()).select_from(
            AuditEvent).where(AuditEvent.action == "approval.escalated",
                              AuditEvent.target_id == str(approval_id)))
    assert escalations == 1
    assert request_row(app, approval_id)["status"] == "escalated"


def test_the_requester_withdraws_and_the_approvers_are_told(app, factory, worker):
    shop = filed_request(app, app.test_client(), factory, managers=1)
    from conftest import wait_for
    wait_for(lambda: request_row(app, shop["approval_id"])["routed"], message="routed")
    manager_token = shop["manager_tokens"][0]
    url = f"/api/v1/approval_requests/{shop['approval_id']}/withdraw"
    refused = app.test_client().post(url, json={}, headers=bearer(manager_token))
    assert refused.status_code == 403 and refused.json["error"]["code"] == "not_requester"

    response = app.test_client().post(url, json={"comment": "Customer kept it."},
                                      headers=bearer(shop["token"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["approval_request"]["status"] == "withdrawn"
    assert effects(app, shop)["order_status"] == "in_progress"
    again = app.test_client().post(url, json={}, headers=bearer(shop["token"]))
    assert again.status_code == 409 and again.json["error"]["code"] == "approval_closed"
    late = app.test_client().post(
        f"/api/v1/approval_requests/{shop['approval_id']}/approve", json={},
        headers=bearer(manager_token))
    assert late.status_code == 409 and late.json["error"]["code"] == "approval_closed"

    from test_approvals import mail_to
    mails = wait_for(lambda: mail_to(app, shop["managers"][0], "Withdrawn"), message="mail")
    assert "nothing left to decide" in mails[0].body and "Customer kept it." in mails[0].body


def test_a_withdrawal_racing_an_approval_ends_one_way(app, factory):
    for _ in range(ROUNDS):
        shop = filed_request(app, app.test_client(), factory)
        results = race(decide(app, shop, "approve", shop["manager_tokens"][0]),
                       decide(app, shop, "withdraw", shop["token"]))
        assert codes(results) == [(200, None), (409, "approval_closed")], \
            [r.get_data(as_text=True) for r in results]
        status = request_row(app, shop["approval_id"])["status"]
        seen = effects(app, shop)
        if results[0].status_code == 200:
            assert status == "approved" and seen["order_status"] == "cancelled"
        else:
            assert status == "withdrawn" and seen["order_status"] == "in_progress"
            assert seen["cancellations"] == 0


def test_withdraw_in_the_panel(app, auth, factory):
    from conftest import csrf_from

    shop = filed_request(app, app.test_client(), factory)
    client = auth(shop["user_id"], client=app.test_client()).client
    page = client.get("/approvals?tab=mine")
    html = page.get_data(as_text=True)
    assert 'data-testid="withdraw"' in html and "Withdraw request #" in html
    response = client.post(f"/approvals/{shop['approval_id']}/withdraw",
                           data={"csrf_token": csrf_from(page),
                                 "next": "/approvals?tab=mine"}, follow_redirects=True)
    html = response.get_data(as_text=True)
    assert f"Withdrew request #{shop['approval_id']}" in html
    assert 'data-approval-status="withdrawn"' in html
    assert 'data-testid="withdraw"' not in html
    assert " new</span>" not in html  # their own doing is no news to them
