"""SPEC §1: which orders can be cancelled, the blockers, and the order in which checks answer.

Every rejected request must leave the order exactly as it was: same status and version, stock,
loyalty, and no refund, notification, cancellation, approval request or audit event.
"""
import pytest

from conftest import assert_api_error, cancel, order_state


@pytest.mark.parametrize("status", ["completed", "cancelled", "archived"])
def test_order_in_a_final_state_cannot_be_cancelled(app, client, factory, status):
    shop = factory.shop(role="admin", status=status)
    before = order_state(app, shop["order_id"])

    response = cancel(client, shop["order_id"], shop["token"])

    error = assert_api_error(response, 400, "invalid_state")
    assert status in error["message"]
    assert order_state(app, shop["order_id"]) == before


@pytest.mark.parametrize("status", ["pending", "on_hold", "in_progress"])
def test_cancellable_states_are_cancelled_by_an_admin(app, client, factory, status):
    shop = factory.shop(role="admin", status=status)

    response = cancel(client, shop["order_id"], shop["token"])

    assert response.status_code == 200, response.json
    assert response.json["status"] == "cancelled"
    assert order_state(app, shop["order_id"])["cancellations"] == 1


@pytest.mark.parametrize("order_kw, code", [
    ({"billing_hold": True}, "billing_hold_active"),
    ({"shipment_status": "in_transit"}, "shipment_in_transit"),
])
def test_blockers_answer_409_with_their_code(app, client, factory, order_kw, code):
    shop = factory.shop(role="admin", **order_kw)
    before = order_state(app, shop["order_id"])

    response = cancel(client, shop["order_id"], shop["token"])

    assert_api_error(response, 409, code)
    assert order_state(app, shop["order_id"]) == before


def test_stale_version_is_a_concurrent_modification_with_the_current_version(app, client,
                                                                             factory):
    shop = factory.shop(role="admin")
    current = client.get(f"/api/v1/orders/{shop['order_id']}",
                         headers={"Authorization": f"Bearer {shop['token']}"}).json["version"]
    before = order_state(app, shop["order_id"])

    response = cancel(client, shop["order_id"], shop["token"], version=current + 1)

    error = assert_api_error(response, 409, "concurrent_modification")
    assert error["current_version"] == current
    assert order_state(app, shop["order_id"]) == before

    # Refreshing and sending the version the UI now shows succeeds.
    response = cancel(client, shop["order_id"], shop["token"], version=current)
    assert response.status_code == 200, response.json
    assert response.json["version"] > current


def test_unknown_order_is_404(client, factory):
    token = factory.token(factory.user("admin"))
    assert_api_error(cancel(client, 987654321, token), 404, "not_found")


# --- precedence: the first failing check answers ------------------------------------------------

def _other_store_order(factory, **order_kw):
    store_id = factory.store()
    product_id = factory.product()
    factory.stock(store_id, product_id)
    return factory.order(store_id, [(product_id, 1, 1000)], customer_id=factory.customer(),
                         **order_kw)


@pytest.mark.parametrize("order_kw", [
    {"status": "completed"},
    {"billing_hold": True},
    {"shipment_status": "in_transit", "status": "archived"},
    {"status": "in_progress"},  # would need approval from a manager of that store
])
def test_another_stores_order_is_404_whatever_else_is_wrong(app, client, factory, order_kw):
    manager = factory.shop(role="store_manager")
    foreign = _other_store_order(factory, **order_kw)
    before = order_state(app, foreign)

    response = cancel(client, foreign, manager["token"])

    error = assert_api_error(response, 404, "not_found")
    assert "store" not in error["message"].lower()  # existence elsewhere is not revealed
    assert order_state(app, foreign) == before


def test_another_stores_order_is_404_even_when_the_reason_is_forbidden(app, client, factory):
    support = factory.shop(role="customer_service")
    foreign = _other_store_order(factory)
    response = cancel(client, foreign, support["token"], reason="inventory_issues")
    assert_api_error(response, 404, "not_found")


def test_forbidden_reason_is_403_before_the_state_is_checked(app, client, factory):
    shop = factory.shop(role="customer_service", status="completed")
    before = order_state(app, shop["order_id"])
    response = cancel(client, shop["order_id"], shop["token"], reason="inventory_issues")
    assert_api_error(response, 403, "forbidden")
    assert order_state(app, shop["order_id"]) == before


def test_completed_order_on_billing_hold_is_400_not_409(app, client, factory):
    shop = factory.shop(role="admin", status="completed", billing_hold=True,
                        shipment_status="in_transit")
    before = order_state(app, shop["order_id"])
    response = cancel(client, shop["order_id"], shop["token"], version=99)
    assert_api_error(response, 400, "invalid_state")
    assert order_state(app, shop["order_id"]) == before


def test_billing_hold_is_reported_before_shipment_and_version(app, client, factory):
    shop = factory.shop(role="admin", billing_hold=True, shipment_status="in_transit")
    response = cancel(client, shop["order_id"], shop["token"], version=42)
    assert_api_error(response, 409, "billing_hold_active")


def test_shipment_in_transit_is_reported_before_a_stale_version(app, client, factory):
    shop = factory.shop(role="admin", shipment_status="in_transit")
    response = cancel(client, shop["order_id"], shop["token"], version=42)
    assert_api_error(response, 409, "shipment_in_transit")


@pytest.mark.parametrize("order_kw, code", [
    ({"billing_hold": True}, "billing_hold_active"),
    ({"shipment_status": "in_transit"}, "shipment_in_transit"),
])
def test_a_blocker_answers_409_before_approval_would_be_required(app, client, factory,
                                                                 order_kw, code):
    # fulfillment + in_progress would need approval (202); the blocker answers first.
    shop = factory.shop(role="fulfillment", status="in_progress", **order_kw)
    before = order_state(app, shop["order_id"])
    response = cancel(client, shop["order_id"], shop["token"])
    assert_api_error(response, 409, code)
    assert order_state(app, shop["order_id"]) == before


def test_a_stale_version_answers_409_before_approval_would_be_required(app, client, factory):
    shop = factory.shop(role="fulfillment", status="in_progress")
    before = order_state(app, shop["order_id"])
    response = cancel(client, shop["order_id"], shop["token"], version=before["version"] + 5)
    error = assert_api_error(response, 409, "concurrent_modification")
    assert error["current_version"] == before["version"]
    assert order_state(app, shop["order_id"]) == before


def test_second_cancel_of_the_same_order_is_invalid_state_and_changes_nothing(app, client,
                                                                             factory):
    shop = factory.shop(role="admin", points_earned=10, points_redeemed=20)
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200
    after_first = order_state(app, shop["order_id"])

    response = cancel(client, shop["order_id"], shop["token"])

    assert_api_error(response, 400, "invalid_state")
    assert order_state(app, shop["order_id"]) == after_first
