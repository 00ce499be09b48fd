"""In a real browser (seed A1): a store manager filters the orders list, selects every order
matching the filter (not just the page), cancels them with Bulk Actions → Cancel Orders, and
watches the job page's progress bar reach 100% while a real worker cancels them."""
import re

import pytest

from models import BulkJob, Order, db

from conftest import shot, sign_in

pytestmark = pytest.mark.browser

ORDERS = 200


def test_cancel_every_order_matching_a_filter(app, factory, worker, live_server, page):
    store_id = factory.store()
    product_id = factory.product(1200)
    factory.stock(store_id, product_id, on_hand=1000)
    manager = factory.user("store_manager", stores=[store_id])
    ids = factory.many_orders(store_id, ORDERS, [product_id], price_cents=1200)
    with app.app_context():
        # Every order of this batch, and nothing else: the number prefix factory.many_orders gave.
        prefix = db.session.get(Order, ids[0]).number.rsplit("-", 1)[0]

    sign_in(app, page, live_server, manager, then="/")
    page.fill("#q", prefix)
    with page.expect_navigation():
        page.get_by_role("button", name="Apply").click()
    assert f"of {ORDERS}" in page.get_by_test_id("result-count").inner_text()
    assert page.get_by_test_id("bulk-cancel-orders").is_disabled()

    # Tick the page, then take up the offer of every matching order.
    page.get_by_test_id("bulk-select-page").check()
    bar = page.get_by_test_id("bulk-selection-bar")
    bar.wait_for(state="visible")
    assert "All 25 orders on this page are selected" in bar.inner_text()
    page.get_by_test_id("bulk-select-matching").click()
    assert f"All {ORDERS} orders matching these filters are selected" in bar.inner_text()
    assert page.get_by_test_id("bulk-selected-count").inner_text() == str(ORDERS)
    shot(page, "bulk-list-selected")

    page.get_by_test_id("bulk-actions").click()
    item = page.get_by_test_id("bulk-cancel-orders")
    item.wait_for(state="visible")
    assert item.inner_text().strip() == f"Cancel Orders ({ORDERS})"
    page.wait_for_timeout(100)  # Popper places the menu on the next frames
    item.click()
    page.wait_for_selector("#bulk-cancel-modal.show")
    dialog = page.locator("#bulk-cancel-modal")
    assert dialog.get_by_test_id("bulk-dialog-count").inner_text() == str(ORDERS)
    assert "customer_requested" not in dialog.locator("select[name=reason]").inner_html()
    dialog.locator("select[name=reason]").select_option("inventory_issues")
    dialog.locator("textarea[name=notes]").fill("Supplier recall R-88")
    shot(page, "bulk-dialog")

    # A destructive action asks twice: the second step says what will happen.
    dialog.get_by_test_id("bulk-continue").click()
    question = dialog.get_by_test_id("bulk-question")
    question.wait_for(state="visible")
    assert question.inner_text() == f"Cancel {ORDERS} orders? This cannot be undone in bulk."
    assert "Inventory issues" in dialog.inner_text()
    shot(page, "bulk-dialog-confirm")
    with page.expect_navigation():
        dialog.get_by_test_id("bulk-confirm").click()

    match = re.search(r"/bulk-jobs/(\d+)$", page.url)
    assert match, page.url
    job_id = int(match.group(1))
    assert f"Bulk cancellation #{job_id} started: {ORDERS} order(s)" in page.locator(
        ".alert-success").inner_text()
    shot(page, "bulk-job-running")

    # The script polls, then reloads the page once the job has finished.
    page.wait_for_selector("[data-bulk-progress][data-finished='1']", timeout=120000)
    assert page.get_by_test_id("bulk-percent").inner_text().strip() == "100%"
    assert page.get_by_test_id("bulk-processed").inner_text().strip() == \
        f"{ORDERS} of {ORDERS} processed"
    assert page.get_by_test_id("bulk-succeeded").inner_text().strip() == f"{ORDERS} cancelled"
    assert page.get_by_test_id("bulk-failed").inner_text().strip() == "0 failed"
    assert page.get_by_test_id("bulk-status").inner_text().strip() == "Completed"
    assert page.locator("[data-testid=bulk-bar]").get_attribute("aria-valuenow") == "100"
    assert page.get_by_test_id("retry-failed").count() == 0
    assert page.locator("tr[data-item-status=succeeded]").count() == 100  # first page of results
    shot(page, "bulk-job-finished")

    with app.app_context():
        job = db.session.get(BulkJob, job_id)
        assert (job.status, job.total, job.succeeded, job.failed) == ("completed", ORDERS,
                                                                      ORDERS, 0)
        statuses = db.session.scalars(db.select(Order.status).where(Order.id.in_(ids))).all()
    assert statuses == ["cancelled"] * ORDERS
