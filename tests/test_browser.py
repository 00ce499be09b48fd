"""Smoke test in a real browser: the cancel dialog from the list and, with its second
confirmation, from the detail page of an order whose fulfillment has started."""
import os
import threading
from pathlib import Path

import pytest
from conftest import ROOT, free_port

from models import Order, User, db

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is not installed; the browser smoke test needs it"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (REQUIRE_BROWSER=1)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live_server(app):
    from werkzeug.serving import make_server

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(app, page, base, user_id):
    with app.app_context():
        email = db.session.get(User, user_id).email
    page.goto(base + "/login")
    page.fill("#email", email)
    page.fill("#password", "secret-pass")
    page.click("button[type=submit]")
    page.wait_for_url(base + "/dashboard")
    page.goto(base + "/")


def status_of(app, order_id):
    with app.app_context():
        return db.session.get(Order, order_id).status


def test_cancel_from_the_row_action_menu(app, factory, live_server, page):
    shop = factory.shop(role="store_manager")
    sign_in(app, page, live_server, shop["user_id"])
    shot(page, "browser-list")

    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    row.locator(".row-actions button").click()
    row.get_by_text("Cancel Order").click()
    dialog = page.locator("#cancel-order-modal")
    dialog.wait_for(state="visible")
    page.wait_for_selector("#cancel-order-modal.show")
    dialog.locator("select[name=reason]").select_option("inventory_issues")
    dialog.locator("textarea[name=notes]").fill("Recalled batch")
    shot(page, "browser-dialog")
    with page.expect_navigation():
        dialog.get_by_role("button", name="Confirm Cancellation").click()

    alert = page.locator(".alert-success")
    assert "cancelled. Refund of $55.00 queued" in alert.inner_text()
    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    assert row.locator(".status-badge").inner_text().strip() == "Cancelled"
    assert status_of(app, shop["order_id"]) == "cancelled"


def test_in_progress_order_asks_twice_on_the_detail_page(app, factory, live_server, page):
    shop = factory.shop(role="store_manager", status="in_progress")
    sign_in(app, page, live_server, shop["user_id"])
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
