"""In a real browser, under the Content-Security-Policy: the dashboard's charts, the orders list
and its cancel dialog, an order, a bulk job's progress bar, the API docs and Flask-Admin all
work, and nothing on them is refused by the policy or fails in the console."""
import os

import pytest

from conftest import ROOT, bearer, open_row_dialog, shot, sign_in, wait_for

pytestmark = pytest.mark.browser

CHART_JS = ROOT / "static" / "vendor" / "chart.umd.js"

# Runs in every page before its own scripts: report each refusal by the policy.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportViolation([event.violatedDirective, event.blockedURI,
                          event.sourceFile + ":" + event.lineNumber].join(" "));
});
"""


@pytest.fixture
def watched_page(new_page):
    """A page whose policy violations and console errors are collected."""
    page = new_page()
    problems = []
    page.context.expose_function("reportViolation",
                                 lambda text: problems.append(f"{page.url}: CSP {text}"))
    page.context.add_init_script(REPORT_VIOLATIONS)
    # A resource that fails is reported with its address by the "response" listener; the
    # console's own line for it is not (Flask-Admin's pages have no icon link, and Chromium's
    # own request for /favicon.ico is a 404 that only the console sees).
    page.on("console", lambda message: message.type == "error"
            and not message.text.startswith("Failed to load resource")
            and problems.append(f"{page.url}: console {message.text}"))
    page.on("response", lambda response: response.status >= 400
            and problems.append(f"{page.url}: {response.status} {response.url}"))
    return page, problems


def test_panel_pages_work_without_policy_violations(app, client, factory, worker, live_server,
                                                    watched_page):
    page, problems = watched_page
    shop = factory.shop(role="admin")
    # Something to chart, and a finished bulk job to show.
    cancelled = factory.order(shop["store_id"], [(shop["product_id"], 1, 2500)])
    response = client.put(f"/api/v1/orders/{cancelled}/status", headers=bearer(shop["token"]),
                          json={"status": "cancelled", "reason": "inventory_issues"})
    assert response.status_code == 200, response.get_data(as_text=True)
    bulk_orders = [factory.order(shop["store_id"], [(shop["product_id"], 1, 2500)])
                   for _ in range(2)]
    job = client.post("/api/v1/orders/bulk_update", headers=bearer(shop["token"]),
                      json={"order_ids": bulk_orders, "status": "cancelled",
                            "reason": "inventory_issues"})
    assert job.status_code == 202, job.get_data(as_text=True)
    job_id = job.json["job_id"]
    wait_for(lambda: client.get(f"/api/v1/bulk_jobs/{job_id}", headers=bearer(shop["token"]))
             .json["status"] == "completed", timeout=60, message="the bulk job to finish")

    sign_in(app, page, live_server, shop["user_id"])  # the login page, then the dashboard
    if CHART_JS.exists() or os.environ.get("REQUIRE_BROWSER") == "1":
        page.locator("canvas[data-testid=chart-reason]").wait_for(state="visible")
        assert page.evaluate("() => Chart.getChart(document.getElementById('chart-reason'))"
                             ".data.datasets[0].data.reduce((a, b) => a + b, 0)") >= 1
    shot(page, "csp-dashboard")

    page.goto(live_server + "/")
    row = page.locator(f"tr[data-order-id='{shop['order_id']}']")
    open_row_dialog(page, row, "Cancel Order")
    assert page.locator("#cancel-order-modal select[name=reason]").is_visible()
    shot(page, "csp-order-dialog")
    page.keyboard.press("Escape")

    page.goto(f"{live_server}/orders/{shop['order_id']}")
    page.wait_for_selector("h1")

    # The progress bar's width comes from data-width, set by script (no style attribute).
    page.goto(f"{live_server}/bulk-jobs/{job_id}")
    bar = page.locator("[data-bar=succeeded]").first
    wait_for(lambda: bar.evaluate("el => el.style.width") == "100%", timeout=5,
             message="the progress bar to be drawn")
    assert bar.bounding_box()["width"] > 50
    shot(page, "csp-bulk-job")

    page.goto(live_server + "/docs/api")
    page.wait_for_selector(".schema-field")

    # Flask-Admin (its own templates, inline event handlers allowed under /admin): the index,
    # model lists with their inline "delete" confirmations, forms, and our maintenance page.
    # (Not the user form: its select fields make Flask-Admin trip over a WTForms deprecation,
    # which this suite's filterwarnings=error turns into a 500.)
    for path in ("/admin/", "/admin/users/", "/admin/stores/new/", "/admin/stock/",
                 "/admin/products/", "/admin/settings/", "/admin/maintenance/"):
        response = page.goto(live_server + path)
        assert response.status == 200, path
        page.wait_for_selector(".navbar")
    shot(page, "csp-admin")

    assert not problems, "\n".join(problems)


def test_an_inline_script_is_refused_on_a_panel_page(live_server, watched_page):
    """The check above would see a violation: prove it on the login page with an injected
    inline script, which the policy must refuse."""
    page, problems = watched_page
    page.goto(live_server + "/login")
    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "window.inlineRan = true";
        document.body.appendChild(script);
    }""")
    wait_for(lambda: problems, timeout=5, message="the violation to be reported")
    assert page.evaluate("() => window.inlineRan === undefined")
    assert any("script-src" in problem for problem in problems), problems
