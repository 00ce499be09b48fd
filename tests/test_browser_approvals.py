"""In a real browser: fulfillment staff ask for approval through the cancel dialog, the store
manager approves on /approvals, and the order is cancelled. Screenshots go to test-artifacts/."""
import pytest

from models import ApprovalRequest, Order, db

from conftest import open_row_dialog, shot, sign_in

pytestmark = pytest.mark.browser


def test_request_approval_then_approve(app, factory, live_server, new_page):
    shop = factory.shop(role="fulfillment", status="in_progress", quantity=3)
    manager = factory.user("store_manager", stores=[shop["store_id"]])
    order_url = f"{live_server}/orders/{shop['order_id']}"

    # Fulfillment: the list's row menu offers "Request approval"; the dialog is the request form.
    page = new_page()
    sign_in(app, page, live_server, shop["user_id"])
    page.goto(f"{live_server}/?status=in_progress")
    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    open_row_dialog(page, row, "Request approval")
    page.wait_for_selector("#cancel-order-modal.show")
    dialog = page.locator("#cancel-order-modal")
    assert "Request approval to cancel order" in dialog.inner_text()
    assert "Fulfillment has started" in dialog.locator(".js-approval-why").inner_text()
    assert dialog.locator("textarea[name=justification]").evaluate("el => el.required")
    shot(page, "approvals-list-dialog")

    page.goto(order_url)
    page.get_by_test_id("request-approval").click()
    page.wait_for_selector("#cancel-order-modal.show")
    dialog.locator("select[name=reason]").select_option("inventory_issues")
    dialog.locator("textarea[name=justification]").fill(
        "Supplier recalled this batch; the customer agreed to a replacement order.")
    dialog.locator("textarea[name=notes]").fill("Recall notice R-17")
    shot(page, "approvals-request-dialog")
    with page.expect_navigation():
        dialog.get_by_role("button", name="Submit Approval Request").click()
    assert "sent to the approvers" in page.locator(".alert-success").inner_text()
    assert page.get_by_test_id("order-status").inner_text().strip() == "In progress"
    shot(page, "approvals-order-pending")

    # The store manager: badge in the navbar, the queue, approve with a comment.
    manager_page = new_page()
    sign_in(app, manager_page, live_server, manager)
    assert manager_page.get_by_test_id("approvals-badge").inner_text().strip() != ""
    manager_page.get_by_test_id("nav-approvals").click()
    card = manager_page.locator("[data-testid=approval-card]", has_text=shop_number(app, shop))
    card.wait_for()
    assert "Supplier recalled this batch" in card.inner_text()
    shot(manager_page, "approvals-queue")
    card.get_by_test_id("decision-comment").fill("Confirmed with the supplier.")
    with manager_page.expect_navigation():
        card.get_by_test_id("approve").click()
    assert "is cancelled" in manager_page.locator(".alert-success").inner_text()
    shot(manager_page, "approvals-after-approve")

    manager_page.goto(order_url)
    assert manager_page.get_by_test_id("order-status").inner_text().strip() == "Cancelled"
    assert "Confirmed with the supplier." in manager_page.get_by_test_id(
        "order-approval-requests").inner_text()
    shot(manager_page, "approvals-order-cancelled")
    with app.app_context():
        assert db.session.get(Order, shop["order_id"]).status == "cancelled"
        approval = db.session.scalar(db.select(ApprovalRequest).where(
            ApprovalRequest.order_id == shop["order_id"]))
        assert approval.status == "approved" and approval.decided_by_id == manager

    # The dashboard counts the approved cancellation (a fresh store: it is the only one there),
    # in the table and, where Chart.js is vendored, in the chart.
    manager_page.get_by_role("link", name="Dashboard").click()
    manager_page.wait_for_url(live_server + "/dashboard")
    assert manager_page.get_by_test_id("kpi-cancellations").inner_text().strip() == "1"
    staff = manager_page.locator(f"[data-testid=table-staff] tr[data-key='{manager}']")
    assert staff.get_attribute("data-count") == "1"  # cancelled as the approver
    if manager_page.locator("canvas[data-testid=chart-reason]").count():
        manager_page.locator("canvas[data-testid=chart-reason]").wait_for(state="visible")
        counts = manager_page.evaluate("() => Chart.getChart(document.getElementById("
                                       "'chart-reason')).data.datasets[0].data")
        assert counts == [1]
    shot(manager_page, "approvals-dashboard")

    # Back to the requester: "My requests" shows the outcome.
    page.goto(f"{live_server}/approvals?tab=mine")
    mine = page.get_by_test_id("my-requests")
    assert "Approved" in mine.inner_text() and "Confirmed with the supplier." in mine.inner_text()
    shot(page, "approvals-my-requests")


def shop_number(app, shop):
    with app.app_context():
        return db.session.get(Order, shop["order_id"]).number
