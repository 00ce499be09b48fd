"""In a real browser: a store manager cancels an order, then sees it counted on the dashboard —
in the chart (drawn by the vendored Chart.js) and in the table beside it; the audit log shows it."""
import os
import threading
from pathlib import Path

import pytest
from conftest import ROOT, free_port

from models import User, db, utcnow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHART_JS = ROOT / "static" / "vendor" / "chart.umd.js"

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
    context = browser.new_context(viewport={"width": 1440, "height": 900})
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


def test_a_cancellation_shows_on_the_dashboard_chart_and_table(app, factory, live_server, page):
    shop = factory.shop(role="store_manager")
    with app.app_context():
        email = db.session.get(User, shop["user_id"]).email
    page.goto(live_server + "/login")
    page.fill("#email", email)
    page.fill("#password", "secret-pass")
    page.click("button[type=submit]")
    page.wait_for_url(live_server + "/dashboard")  # the landing page
    assert page.locator("[data-testid=kpi-cancellations]").inner_text().strip() == "0"

    page.goto(live_server + "/")
    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    row.locator(".row-actions button").click()
    row.get_by_text("Cancel Order").click()
    page.wait_for_selector("#cancel-order-modal.show")
    dialog = page.locator("#cancel-order-modal")
    dialog.locator("select[name=reason]").select_option("inventory_issues")
    with page.expect_navigation():
        dialog.get_by_role("button", name="Confirm Cancellation").click()
    assert "cancelled" in page.locator(".alert-success").inner_text()

    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(live_server + "/dashboard")
    assert page.locator("[data-testid=kpi-cancellations]").inner_text().strip() == "1"
    reasons = page.locator("[data-testid=table-reason]")
    assert reasons.locator("tr[data-key=inventory_issues]").get_attribute("data-count") == "1"
    assert "Inventory" in reasons.locator("tr[data-key=inventory_issues]").inner_text()
    today = utcnow().date().isoformat()
    assert page.locator(f"[data-testid=table-day] tr[data-key='{today}']") \
        .get_attribute("data-count") == "1"
    assert page.locator(f"[data-testid=table-staff] tr[data-key='{shop['user_id']}']") \
        .get_attribute("data-count") == "1"

    if not CHART_JS.exists() and os.environ.get("REQUIRE_BROWSER") != "1":
        assert page.locator("[data-testid=charts-unavailable]").is_visible()
        shot(page, "browser-dashboard")
        pytest.skip("static/vendor/chart.umd.js is not vendored (no npm); tables checked only")
    canvas = page.locator("canvas[data-testid=chart-reason]")
    canvas.wait_for(state="visible")
    drawn = page.evaluate("""() => {
        const chart = Chart.getChart(document.getElementById('chart-reason'));
        const day = Chart.getChart(document.getElementById('chart-day'));
        return {labels: chart.data.labels, counts: chart.data.datasets[0].data,
                dayTotal: day.data.datasets[0].data.reduce((a, b) => a + b, 0)};
    }""")
    assert drawn["counts"] == [1] and len(drawn["labels"]) == 1
    assert drawn["dayTotal"] == 1
    box = canvas.bounding_box()
    assert box["width"] > 100 and box["height"] > 100
    page.wait_for_timeout(600)  # let the entry animation finish before the screenshot
    shot(page, "browser-dashboard")

    page.get_by_role("link", name="Audit log").click()
    page.wait_for_selector("[data-testid=audit-table]")
    assert page.locator("tr[data-action='order.cancelled']").count() >= 1
    shot(page, "browser-audit-log")
    page.get_by_test_id("verify-chain").first.click()
    page.wait_for_selector("[data-testid=chain-ok]")
    shot(page, "browser-audit-verify")
