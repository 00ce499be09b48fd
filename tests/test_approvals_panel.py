"""The approvals panel: the dialog turning into the approval request form, /approvals (queue and
"My requests"), approve / reject with CSRF, the navbar badge, the order's approval card."""
import html
import re

from models import ApprovalRequest, Cancellation, Order, db

from conftest import bearer, csrf_from
from helpers import status_of

JUSTIFICATION = "Supplier recalled the batch; customer agreed on the phone."


def text_of(response):
    return html.unescape(response.get_data(as_text=True))


def shop_with_manager(factory, status="in_progress", **kw):
    shop = factory.shop(role="fulfillment", status=status, **kw)
    shop["manager"] = factory.user("store_manager", stores=[shop["store_id"]])
    return shop


def file_request(app, client, shop, **fields):
    token = csrf_from(client.get(f"/orders/{shop['order_id']}"))
    data = {"csrf_token": token, "reason": "inventory_issues", "notify_customer": "y",
            "version": "1", "justification": JUSTIFICATION, "notes": "Recall", **fields}
    return client.post(f"/orders/{shop['order_id']}/approval-request", data=data)


def approval_of(app, order_id):
    with app.app_context():
        return db.session.scalar(db.select(ApprovalRequest).where(
            ApprovalRequest.order_id == order_id).order_by(ApprovalRequest.id.desc()))


def test_the_panel_offers_cancel_or_request_approval_per_policy(app, client, auth, factory):
    shop = shop_with_manager(factory)
    auth(shop["user_id"])
    page = text_of(client.get(f"/orders/{shop['order_id']}"))
    assert 'data-testid="request-approval"' in page and 'data-testid="cancel-order"' not in page
    assert f'action="/orders/{shop["order_id"]}/approval-request"' in page
    assert "Request approval to cancel order" in page and 'name="justification"' in page
    assert "Fulfillment has started; a store manager or admin must approve." in page
    listing = text_of(client.get("/?status=in_progress"))
    row = re.search(rf'<tr data-order-row="{shop["order_id"]}".*?</tr>', listing, re.S).group(0)
    assert "Request approval" in row and "data-approval-why" in row
    assert f'data-action="/orders/{shop["order_id"]}/approval-request"' in row
    # The no-JavaScript page is the approval request form too.
    full = text_of(client.get(f"/orders/{shop['order_id']}/cancel"))
    assert "Submit Approval Request" in full and 'name="justification"' in full

    with client.session_transaction() as session:
        session.clear()
    auth(shop["manager"])
    page = text_of(client.get(f"/orders/{shop['order_id']}"))
    assert 'data-testid="cancel-order"' in page and 'data-testid="request-approval"' not in page
    row = re.search(rf'<tr data-order-row="{shop["order_id"]}".*?</tr>',
                    text_of(client.get("/?status=in_progress")), re.S).group(0)
    assert "Cancel Order" in row and "data-approval-why" not in row


def test_the_request_form_needs_a_justification_and_csrf(app, client, auth, factory):
    shop = shop_with_manager(factory)
    auth(shop["user_id"])
    response = file_request(app, client, shop, justification="  ")
    assert response.status_code == 400
    assert "Tell the approver why" in text_of(response)
    assert approval_of(app, shop["order_id"]) is None

    response = client.post(f"/orders/{shop['order_id']}/approval-request",
                           data={"reason": "inventory_issues", "justification": "x"})
    assert response.status_code == 400  # no CSRF token
    assert approval_of(app, shop["order_id"]) is None

    response = file_request(app, client, shop, next="/?status=in_progress")
    assert response.status_code == 302 and response.headers["Location"] == "/?status=in_progress"
    approval = approval_of(app, shop["order_id"])
    assert approval.justification == JUSTIFICATION and approval.payload["notes"] == "Recall"
    assert f"Approval request #{approval.id}" in text_of(client.get("/?status=in_progress"))
    assert status_of(app, shop["order_id"]) == "in_progress"


def test_the_approver_queue_badge_and_approve(app, client, auth, factory):
    shop = shop_with_manager(factory)
    auth(shop["user_id"])
    file_request(app, client, shop)
    approval = approval_of(app, shop["order_id"])
    mine = text_of(client.get("/approvals"))  # a requester lands on "My requests"
    assert 'data-testid="my-requests"' in mine and 'data-approval-status="pending"' in mine
    assert 'data-testid="tab-queue"' not in mine

    with client.session_transaction() as session:
        session.clear()
    auth(shop["manager"])
    orders = text_of(client.get("/"))
    badge = re.search(r'data-testid="approvals-badge">(\d+)<', orders)
    assert badge and int(badge.group(1)) >= 1
    queue = text_of(client.get("/approvals"))
    card = re.search(rf'data-approval-id="{approval.id}".*?</form>', queue, re.S).group(0)
    assert JUSTIFICATION in card and "Fulfillment has started" in card
    assert "Fulfillment Tester" in card and 'data-testid="approve"' in card

    # No CSRF token: refused, nothing cancelled.
    response = client.post(f"/approvals/{approval.id}/approve", data={"comment": "ok"})
    assert response.status_code in (302, 400)
    assert status_of(app, shop["order_id"]) == "in_progress"
    assert approval_of(app, shop["order_id"]).status == "pending"

    response = client.post(f"/approvals/{approval.id}/approve",
                           data={"csrf_token": csrf_from(client.get("/approvals")),
                                 "comment": "Approved by phone."})
    assert response.status_code == 302
    assert "is cancelled" in text_of(client.get(response.headers["Location"]))
    assert status_of(app, shop["order_id"]) == "cancelled"
    with app.app_context():
        cancellation = db.session.scalar(db.select(Cancellation).where(
            Cancellation.order_id == shop["order_id"]))
        assert cancellation.actor_id == shop["manager"]
    detail = text_of(client.get(f"/orders/{shop['order_id']}"))
    assert 'data-testid="order-approval-requests"' in detail
    assert "Approved by phone." in detail and 'data-approval-status="approved"' in detail

    # The requester sees the outcome: badge, then "My requests" (which marks it seen).
    with client.session_transaction() as session:
        session.clear()
    auth(shop["user_id"])
    assert 'data-testid="approvals-badge">1<' in text_of(client.get("/"))
    mine = text_of(client.get("/approvals?tab=mine"))
    assert 'data-approval-status="approved"' in mine and "Approved by phone." in mine
    assert 'data-testid="approvals-badge"' not in text_of(client.get("/"))


def test_reject_needs_a_comment_and_self_approval_is_refused(app, client, auth, factory):
    shop = factory.shop(role="store_manager", status="pending", age_days=40)
    other_manager = factory.user("store_manager", stores=[shop["store_id"]])
    auth(shop["user_id"])
    file_request(app, client, shop)
    approval = approval_of(app, shop["order_id"])
    assert approval is not None
    token = csrf_from(client.get("/approvals"))
    response = client.post(f"/approvals/{approval.id}/approve", data={"csrf_token": token})
    page = text_of(client.get(response.headers["Location"]))
    assert "cannot decide your own approval request" in page
    assert status_of(app, shop["order_id"]) == "pending"

    with client.session_transaction() as session:
        session.clear()
    token = auth(other_manager).csrf("/approvals")
    response = client.post(f"/approvals/{approval.id}/reject",
                           data={"csrf_token": token, "comment": ""})
    assert "A comment is required" in text_of(client.get(response.headers["Location"]))
    assert approval_of(app, shop["order_id"]).status in ("pending", "escalated")
    response = client.post(f"/approvals/{approval.id}/reject",
                           data={"csrf_token": token, "comment": "Too old; talk to an admin."})
    assert "Rejected request" in text_of(client.get(response.headers["Location"]))
    assert approval_of(app, shop["order_id"]).status == "rejected"
    assert status_of(app, shop["order_id"]) == "pending"


def test_the_approval_endpoints_are_documented(client, factory):
    token = factory.token(factory.user("admin"))
    document = client.get("/api/openapi.json", headers=bearer(token)).json
    paths = document["paths"]
    assert "post" in paths["/api/v1/orders/{order_id}/approval_request"]
    assert "post" in paths["/api/v1/approval_requests/{approval_id}/approve"]
    assert "post" in paths["/api/v1/approval_requests/{approval_id}/reject"]


def test_a_partial_request_says_which_items_it_cancels(app, client, auth, factory):
    store_id = factory.store()
    kept, asked = factory.product(1000), factory.product(2500)
    order_id = factory.order(store_id, [(kept, 3, 1000), (asked, 2, 2500)], status="on_hold",
                             customer_id=factory.customer())
    requester = factory.user("fulfillment", stores=[store_id])
    manager = factory.user("store_manager", stores=[store_id])
    with app.app_context():
        order = db.session.get(Order, order_id)
        item_id = order.items[1].id
        asked_name = order.items[1].product.name
    token = auth(requester).csrf(f"/orders/{order_id}")
    response = client.post(f"/orders/{order_id}/modify", data={
        "csrf_token": token, "reason": "inventory_issues", "notify_customer": "y",
        "version": "1", "mode": "approval", "justification": JUSTIFICATION,
        f"qty-{item_id}": "1"})
    assert response.status_code == 302
    approval = approval_of(app, order_id)
    assert approval.payload["items"] == [{"item_id": item_id, "quantity": 1}]

    with client.session_transaction() as session:
        session.clear()
    auth(manager)
    queue = text_of(client.get("/approvals"))
    card = re.search(rf'data-approval-id="{approval.id}".*?</form>', queue, re.S).group(0)
    on_approval = re.search(r'data-testid="on-approval">(.*?)</dd>', card, re.S).group(1)
    assert "whole order" not in on_approval
    assert f"Cancel 1 × {asked_name} (1 item(s))" in on_approval
    assert "the rest of the order stays open" in on_approval
    confirm = re.search(r'data-confirm="([^"]*)" data-testid="approve"', card).group(1)
    assert "cancel 1 item(s) of order" in confirm and "Approve & cancel items" in card

    # The e-mail to the approvers says the same.
    from types import SimpleNamespace

    from cancellation.approvals import notice_message
    with app.app_context():
        stored = db.session.get(ApprovalRequest, approval.id)
        subject, body = notice_message(SimpleNamespace(approval_request=stored,
                                                       event="requested"))
        number = stored.order.number
    assert subject == f"Approval needed to cancel items of order {number}"
    assert f"asks to cancel items of order {number}" in body
    assert f"Cancel:  1 x {asked_name}" in body
