"""Smoke test in a real browser: the cancel dialog from the list and, with its second
confirmation, from the detail page of an order whose fulfillment has started."""
import pytest

from conftest import open_row_dialog, shot, sign_in
from helpers import status_of

pytestmark = pytest.mark.browser


def test_cancel_from_the_row_action_menu(app, factory, live_server, page):
    shop = factory.shop(role="store_manager")
    sign_in(app, page, live_server, shop["user_id"], then="/")
    shot(page, "browser-list")

    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    open_row_dialog(page, row, "Cancel Order")
    dialog = page.locator("#cancel-order-modal")
    dialog.wait_for(state="visible")
    page.wait_for_selector("#cancel-order-modal.show")
    dialog.locator("select[name=reason]").select_option("inventory_issues")
    dialog.locator("textarea[name=notes]").fill("Recalled batch")
    shot(page, "browser-dialog")
    with page.expect_navigation():
        dialog.get_by_role("button", name="Confirm Cancellation").click()

    alert = page.locator(".alert-success")
    assert "cancelled. Refund: $55.00 to the card (processor)" in alert.inner_text()
    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    assert row.locator(".status-badge").inner_text().strip() == "Cancelled"
    assert status_of(app, shop["order_id"]) == "cancelled"


def test_in_progress_order_asks_twice_on_the_detail_page(app, factory, live_server, page):
    shop = factory.shop(role="store_manager", status="in_progress")
    sign_in(app, page, live_server, shop["user_id"], then="/")
    page.goto(f"{live_server}/orders/{shop['order_id']}")

    page.get_by_test_id("cancel-order").click()
    page.wait_for_selector("#cancel-order-modal.show")
    dialog = page.locator("#cancel-order-modal")
    dialog.locator("select[name=reason]").select_option("operational_issues")
    dialog.get_by_role("button", name="Confirm Cancellation").click()

    # The second step replaces the form; nothing has been sent yet.
    yes = dialog.get_by_role("button", name="Yes, cancel order")
    yes.wait_for(state="visible")
    assert "Fulfillment has started" in dialog.inner_text()
    assert status_of(app, shop["order_id"]) == "in_progress"
    shot(page, "browser-second-confirmation")

    # "Back" returns to the form; confirming again comes back to the second step.
    dialog.get_by_role("button", name="Back").click()
    dialog.get_by_role("button", name="Confirm Cancellation").click()
    with page.expect_navigation():
        yes.click()

    assert "cancelled" in page.locator(".alert-success").inner_text()
    assert page.get_by_test_id("order-status").inner_text().strip() == "Cancelled"
    assert status_of(app, shop["order_id"]) == "cancelled"
