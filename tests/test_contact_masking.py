"""Customer contact details typed into a cancellation request never reach roles that may not
see them — not through the order page's audit timeline, nor through v2's audit log."""
from conftest import bearer, login

from models import User, db

CONTACT = "jane.roe@example.com"


def file_customer_request(client, factory):
    """Customer service asks (in_progress needs approval) with the customer's e-mail as contact."""
    shop = factory.shop(role="customer_service", status="in_progress")
    response = client.put(
        f"/api/v1/orders/{shop['order_id']}/status", headers=bearer(shop["token"]),
        json={"status": "cancelled", "reason": "customer_requested",
              "customer_request": {"contact": CONTACT, "requested_at": "2026-01-05T10:00:00Z",
                                   "channel": "email"}})
    assert response.status_code == 202, response.json
    return shop


def test_v2_audit_log_masks_contact_for_ops_not_for_admin(app, client, factory):
    shop = file_customer_request(client, factory)
    ops, admin = factory.user("ops_engineer"), factory.user("admin")
    url = f"/api/v2/orders/{shop['order_id']}/audit-log"

    as_ops = client.get(url, headers=bearer(factory.token(ops))).get_data(as_text=True)
    assert CONTACT not in as_ops and "j***@example.com" in as_ops

    as_admin = client.get(url, headers=bearer(factory.token(admin))).get_data(as_text=True)
    assert CONTACT in as_admin


def test_order_timeline_masks_contact_for_fulfillment(app, client, factory):
    shop = file_customer_request(client, factory)
    fulfillment = factory.user("fulfillment", stores=[shop["store_id"]])
    with app.app_context():
        email = db.session.get(User, fulfillment).email
    login(client, email)
    page = client.get(f"/orders/{shop['order_id']}").get_data(as_text=True)
    assert "approval.requested" in page
    assert CONTACT not in page
