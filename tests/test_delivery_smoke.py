"""A cancellation's refund and notification are delivered by the real worker."""
from conftest import bearer, wait_for


def test_refund_and_notification_delivered(app, client, factory, worker):
    shop = factory.shop(role="admin")
    response = client.put(f"/api/v1/orders/{shop['order_id']}/status",
                          json={"status": "cancelled", "reason": "inventory_issues"},
                          headers=bearer(shop["token"]))
    assert response.status_code == 200, response.json

    def delivered():
        order = client.get(f"/api/v1/orders/{shop['order_id']}",
                           headers=bearer(shop["token"])).json
        states = [r["status"] for r in order["refunds"]] + \
                 [n["status"] for n in order["notifications"]]
        return states if states == ["succeeded", "sent"] else None

    wait_for(delivered, message="refund and notification delivered")
