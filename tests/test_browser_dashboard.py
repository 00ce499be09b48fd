"""In a real browser: a store manager cancels an order, then sees it counted on the dashboard —
in the chart (drawn by the vendored Chart.js) and in the table beside it; the audit log shows it."""
import os

import pytest

from models import utcnow

from conftest import ROOT, open_row_dialog, shot, sign_in

CHART_JS = ROOT / "static" / "vendor" / "chart.umd.js"

pytestmark = pytest.mark.browser


def test_a_cancellation_shows_on_the_dashboard_chart_and_table(app, factory, live_server, page):
    shop = factory.shop(role="store_manager")
    sign_in(app, page, live_server, shop["user_id"])  # lands on the dashboard
    assert page.locator("[data-testid=kpi-cancellations]").inner_text().strip() == "0"

    page.goto(live_server + "/")
    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    open_row_dialog(page, row, "Cancel Order")
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
