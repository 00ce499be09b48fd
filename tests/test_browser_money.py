"""In a real browser: a manager cancels an order paid in cash, pays the refund out at the counter
from /payouts (confirming the question that names the drawer) and sees it paid out on the order;
then reinstates a cancelled card order from the order page's Reinstate button, watching the
countdown and what it will do; and the payouts page fits a phone. Screenshots go to /tmp/shots/
(and, like every browser test's last state, to test-artifacts/)."""
from pathlib import Path

import pytest

from models import Order, Refund, User, db

from conftest import bearer, sign_in, wait_for

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/shots")

# Every visible form control has a label (its own <label>, aria-label or aria-labelledby), and
# the page has one h1: what the panel's pages promise a screen reader.
UNLABELLED = """() => Array.from(document.querySelectorAll(
    "input:not([type=hidden]), select, textarea")).filter(el => el.offsetParent !== null)
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                  && !el.getAttribute("aria-labelledby")).map(el => el.name || el.id)"""


def snap(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def accessible(page):
    assert page.evaluate(UNLABELLED) == [], page.url
    assert page.locator("h1").count() == 1, page.url


def number_of(app, order_id):
    with app.app_context():
        return db.session.get(Order, order_id).number


def test_cash_refund_paid_out_at_the_counter(app, factory, live_server, new_page):
    shop = factory.shop(role="store_manager", tenders=[("cash", 5500)])
    page = new_page()
    questions = []
    page.on("dialog", lambda dialog: questions.append(dialog.message))  # new_page accepts them
    sign_in(app, page, live_server, shop["user_id"], then=f"/orders/{shop['order_id']}")

    # Cancel the cash order from its page.
    page.get_by_test_id("cancel-order").click()
    page.wait_for_selector("#cancel-order-modal.show")
    dialog = page.locator("#cancel-order-modal")
    dialog.locator("select[name=reason]").select_option("inventory_issues")
    with page.expect_navigation():
        dialog.get_by_test_id("confirm-cancellation").click()
    assert page.get_by_test_id("order-status").inner_text().strip() == "Cancelled"
    refunds = page.get_by_test_id("refunds")
    assert "Waiting at the counter" in refunds.inner_text()
    assert page.get_by_test_id("payouts-badge").inner_text().strip() == "1"
    snap(page, "money-1-order-cancelled-cash")

    # The navbar link, the waiting refund, the drawer and the confirmation.
    page.get_by_test_id("nav-payouts").click()
    page.wait_for_url(f"{live_server}/payouts")
    accessible(page)
    row = page.locator("[data-testid=payout-row]", has_text=number_of(app, shop["order_id"]))
    assert "$55.00" in row.inner_text() and "waiting" in row.inner_text()
    row.locator("input[name=drawer]").fill("Drawer 1")
    snap(page, "money-2-payouts")
    with page.expect_navigation():
        row.get_by_test_id("paid-out").click()
    assert questions and questions[-1].startswith("Hand $55.00 in cash to Customer")
    assert questions[-1].endswith("from Drawer 1?")
    assert "Paid out $55.00 in cash" in page.locator(".alert-success").inner_text()
    assert page.get_by_test_id("payouts-empty").is_visible()
    assert page.get_by_test_id("payouts-badge").count() == 0
    snap(page, "money-3-paid-out")

    page.goto(f"{live_server}/orders/{shop['order_id']}")
    payout = page.get_by_test_id("refund-payout").first.inner_text()
    with app.app_context():
        name = db.session.get(User, shop["user_id"]).name
        refund = db.session.scalar(db.select(Refund).where(Refund.order_id == shop["order_id"]))
        assert (refund.status, refund.drawer, refund.paid_out_by_id) == (
            "succeeded", "Drawer 1", shop["user_id"])
    assert f"Paid out by {name} from Drawer 1 at" in payout
    assert "Cash" in page.get_by_test_id("payments").inner_text()
    snap(page, "money-4-order-paid-out")

    # The day's drawer report shows it.
    page.goto(f"{live_server}/payouts/report?store={shop['store_id']}")
    accessible(page)
    assert "$55.00" in page.get_by_test_id("by-drawer").inner_text()
    assert name in page.get_by_test_id("by-staff").inner_text()
    snap(page, "money-5-drawer-report")


def test_reinstate_a_cancelled_order_from_its_page(app, client, factory, live_server,
                                                   new_page):
    # Paid in cash and not handed over yet: the refund waits at the counter, so reinstating
    # voids it (whatever the session worker is doing meanwhile).
    shop = factory.shop(role="store_manager", tenders=[("cash", 5500)])
    response = client.put(f"/api/v1/orders/{shop['order_id']}/status",
                          headers=bearer(shop["token"]),
                          json={"status": "cancelled", "reason": "inventory_issues"})
    assert response.status_code == 200, response.get_data(as_text=True)

    page = new_page()
    sign_in(app, page, live_server, shop["user_id"], then=f"/orders/{shop['order_id']}")
    card = page.get_by_test_id("reinstate-card")
    countdown = page.get_by_test_id("reinstate-countdown")
    first = countdown.inner_text()
    assert " left" in first
    wait_for(lambda: countdown.inner_text() != first, timeout=5,
             message="the countdown to tick")
    effects = card.get_by_test_id("reinstate-effects").inner_text()
    assert "goes back to pending" in effects and "reserved again" in effects
    assert "has not gone out" in effects  # the card refund is voided
    assert "Window closes" in card.inner_text()
    accessible(page)
    snap(page, "money-6-reinstate-offer")

    page.get_by_test_id("reinstate-order").click()
    page.wait_for_selector("#reinstate-modal.show")
    modal = page.locator("#reinstate-modal")
    assert modal.locator("textarea[name=reason]").evaluate("el => el.required")
    modal.locator("textarea[name=reason]").fill("Customer came back for it")
    snap(page, "money-7-reinstate-dialog")
    with page.expect_navigation():
        modal.get_by_test_id("confirm-reinstate").click()
    assert "reinstated: it is pending again" in page.locator(".alert-success").inner_text()
    assert page.get_by_test_id("order-status").inner_text().strip() == "Pending"
    snap(page, "money-8-reinstated")
    with app.app_context():
        assert db.session.get(Order, shop["order_id"]).status == "pending"
        refund = db.session.scalar(db.select(Refund).where(Refund.order_id == shop["order_id"]))
        assert refund.status == "voided"


def test_the_payouts_page_fits_a_phone(app, client, factory, live_server, browser):
    shop = factory.shop(role="store_manager", tenders=[("cash", 5500)])
    response = client.put(f"/api/v1/orders/{shop['order_id']}/status",
                          headers=bearer(shop["token"]),
                          json={"status": "cancelled", "reason": "inventory_issues"})
    assert response.status_code == 200, response.get_data(as_text=True)
    context = browser.new_context(viewport={"width": 375, "height": 740})
    try:
        page = context.new_page()
        sign_in(app, page, live_server, shop["user_id"])
        for path, name in ((f"/payouts?store={shop['store_id']}", "money-9-phone-payouts"),
                           (f"/payouts/report?store={shop['store_id']}",
                            "money-10-phone-report"),
                           (f"/orders/{shop['order_id']}", "money-11-phone-order")):
            page.goto(live_server + path)
            page.wait_for_selector("h1")
            width = page.evaluate("() => [document.documentElement.scrollWidth, "
                                  "document.documentElement.clientWidth]")
            assert width[0] <= width[1], (path, width)
            snap(page, name)
        page.goto(f"{live_server}/payouts?store={shop['store_id']}")
        assert page.get_by_test_id("paid-out").is_visible()
    finally:
        context.close()
