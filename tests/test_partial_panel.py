"""The panel's "Modify Order" (seed A3): the dialog on the detail page, its page, its live
summary, and what a submitted form does — through the test client, with CSRF."""
import re

import pytest
from playwright.sync_api import expect

from models import ApprovalRequest, Order, OrderItem, StockLevel, db

from conftest import csrf_from
from helpers import text_of


def items_of(app, order_id):
    with app.app_context():
        return [(i.id, i.quantity, i.cancelled_quantity)
                for i in db.session.get(Order, order_id).items]


def order_row(app, order_id):
    with app.app_context():
        order = db.session.get(Order, order_id)
        return {"status": order.status, "version": order.version, "total": order.total_cents,
                "refunded": order.refunded_cents}


def two_item_shop(app, factory, role="store_manager", status="pending", **order_kw):
    store_id = factory.store()
    a, b = factory.product(1000), factory.product(2500)
    factory.stock(store_id, a, on_hand=30)
    factory.stock(store_id, b, on_hand=30)
    order_id = factory.order(store_id, [(a, 3, 1000), (b, 2, 2500)], status=status,
                             customer_id=factory.customer(), **order_kw)
    user_id = factory.user(role, stores=[store_id])
    with app.app_context():
        item_a, item_b = [i.id for i in db.session.get(Order, order_id).items]
    return {"store_id": store_id, "a": a, "b": b, "order_id": order_id, "user_id": user_id,
            "item_a": item_a, "item_b": item_b}


def post_modify(client, order_id, *, token, version=1, quantities=(), **fields):
    data = {"csrf_token": token, "reason": "inventory_issues", "notify_customer": "y",
            "version": str(version), "mode": "cancel", **fields}
    for item_id, quantity in quantities:
        data[f"qty-{item_id}"] = str(quantity)
    return client.post(f"/orders/{order_id}/modify", data=data)


def open_detail(auth, shop):
    client = auth(shop["user_id"]).client
    page = client.get(f"/orders/{shop['order_id']}")
    assert page.status_code == 200
    return page


# --- the dialog ------------------------------------------------------------------------------

def test_detail_page_offers_modify_order_with_one_input_per_open_item(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    page = text_of(open_detail(auth, shop))

    assert 'data-testid="modify-order"' in page and "Modify Order" in page
    assert 'id="modify-order-modal"' in page
    assert f'name="qty-{shop["item_a"]}"' in page and f'name="qty-{shop["item_b"]}"' in page
    assert re.search(rf'name="qty-{shop["item_a"]}"[^>]*\bmax="3"', page, re.S)
    assert f'/orders/{shop["order_id"]}/modify/preview' in page
    assert "js/modify-order.js" in page
    assert "Review changes" in page and "Submit Approval Request" not in page.split(
        'id="modify-order-modal"')[1]


def test_no_modify_order_for_cancelled_orders_or_without_open_items(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    token = auth(shop["user_id"]).csrf(f"/orders/{shop['order_id']}")
    response = post_modify(client, shop["order_id"], token=token,
                           quantities=[(shop["item_a"], 3), (shop["item_b"], 2)])
    assert response.status_code == 302
    page = text_of(client.get(f"/orders/{shop['order_id']}"))
    assert 'data-testid="modify-order"' not in page and "modify-order-modal" not in page
    completed = factory.order(shop["store_id"], [(shop["a"], 1, 1000)], status="completed")
    assert 'data-testid="modify-order"' not in text_of(client.get(f"/orders/{completed}"))


def test_modify_through_the_form_cancels_the_items_and_flashes_what_happened(app, client, auth,
                                                                           factory):
    shop = two_item_shop(app, factory)
    token = csrf_from(open_detail(auth, shop))

    response = post_modify(client, shop["order_id"], token=token,
                           quantities=[(shop["item_a"], 2), (shop["item_b"], 0)],
                           notes="Two jars broken in the store")

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/orders/{shop['order_id']}")
    page = text_of(client.get(response.headers["Location"]))
    assert "Cancelled 2 × " in page and "its total is now $66.00" in page
    assert "Refund of $22.00 queued" in page
    assert items_of(app, shop["order_id"]) == [(shop["item_a"], 3, 2), (shop["item_b"], 2, 0)]
    assert order_row(app, shop["order_id"])["status"] == "pending"
    assert "order.partially_cancelled" in page and "Two jars broken in the store" in page
    with app.app_context():
        stock = db.session.scalar(db.select(StockLevel).where(
            StockLevel.store_id == shop["store_id"], StockLevel.product_id == shop["a"]))
        assert (stock.on_hand, stock.reserved) == (30, 1)


def test_the_last_items_cancel_the_order(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    token = csrf_from(open_detail(auth, shop))
    post_modify(client, shop["order_id"], token=token, quantities=[(shop["item_b"], 2)])
    response = post_modify(client, shop["order_id"], token=token, version=2,
                           quantities=[(shop["item_a"], 3)])
    page = text_of(client.get(response.headers["Location"]))
    assert "the order is now cancelled" in page
    # A cancelled order shows what it was placed for (as one cancelled whole does).
    assert order_row(app, shop["order_id"]) == {"status": "cancelled", "version": 3,
                                                "total": 8800, "refunded": 8800}


def test_without_csrf_token_nothing_happens(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    open_detail(auth, shop)
    response = post_modify(client, shop["order_id"], token="forged",
                           quantities=[(shop["item_a"], 1)])
    assert response.status_code == 400
    assert items_of(app, shop["order_id"])[0][2] == 0


# --- errors: shown clearly, nothing changed --------------------------------------------------

def test_too_many_is_shown_on_the_line_and_nothing_changes(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    token = csrf_from(open_detail(auth, shop))
    before = order_row(app, shop["order_id"])

    response = post_modify(client, shop["order_id"], token=token,
                           quantities=[(shop["item_a"], 1), (shop["item_b"], 5)])

    assert response.status_code == 400
    page = text_of(response)
    assert "Nothing was changed: please correct the highlighted fields." in page
    assert "At most 2 of" in page and "table-danger" in page
    # The page keeps what was typed.
    assert re.search(rf'name="qty-{shop["item_b"]}"[^>]*value="5"', page, re.S)
    assert re.search(rf'name="qty-{shop["item_a"]}"[^>]*value="1"', page, re.S)
    assert order_row(app, shop["order_id"]) == before


def test_not_a_number_and_nothing_chosen_are_refused(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    token = csrf_from(open_detail(auth, shop))
    garbage = post_modify(client, shop["order_id"], token=token,
                          quantities=[(shop["item_a"], "two")])
    assert garbage.status_code == 400 and "Enter a whole number." in text_of(garbage)
    negative = post_modify(client, shop["order_id"], token=token,
                           quantities=[(shop["item_a"], -1)])
    assert negative.status_code == 400 and "Enter 0 to 3." in text_of(negative)
    nothing = post_modify(client, shop["order_id"], token=token,
                          quantities=[(shop["item_a"], 0)])
    assert nothing.status_code == 400
    assert "choose how many of which items to remove" in text_of(nothing)
    assert order_row(app, shop["order_id"])["version"] == 1


def test_stale_version_offers_a_refresh_and_changes_nothing(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    token = csrf_from(open_detail(auth, shop))
    response = post_modify(client, shop["order_id"], token=token, version=5,
                           quantities=[(shop["item_a"], 1)])
    assert response.status_code == 302
    page = text_of(client.get(response.headers["Location"]))
    assert "changed by someone else" in page and "it is now version 1" in page
    assert re.search(rf'<a href="/orders/{shop["order_id"]}" class="alert-link">Refresh</a>',
                     page)
    assert items_of(app, shop["order_id"])[0][2] == 0


def test_blocker_is_reported(app, client, auth, factory):
    shop = two_item_shop(app, factory, billing_hold=True)
    token = csrf_from(open_detail(auth, shop))
    response = post_modify(client, shop["order_id"], token=token,
                           quantities=[(shop["item_a"], 1)])
    page = text_of(client.get(response.headers["Location"]))
    assert "alert-danger" in page and "billing hold" in page.lower()
    assert order_row(app, shop["order_id"])["version"] == 1


def test_in_progress_order_needs_the_confirmation(app, client, auth, factory):
    shop = two_item_shop(app, factory, status="in_progress")
    token = csrf_from(open_detail(auth, shop))
    response = post_modify(client, shop["order_id"], token=token,
                           quantities=[(shop["item_a"], 1)])
    assert response.status_code == 400 and "Fulfillment has started" in text_of(response)
    assert items_of(app, shop["order_id"])[0][2] == 0
    response = post_modify(client, shop["order_id"], token=token,
                           quantities=[(shop["item_a"], 1)], confirm_in_progress="y")
    assert response.status_code == 302
    assert items_of(app, shop["order_id"])[0][2] == 1


def test_customer_requested_needs_the_contact(app, client, auth, factory):
    shop = two_item_shop(app, factory, role="customer_service")
    page = open_detail(auth, shop)
    dialog = text_of(page).split('id="modify-order-modal"')[1]
    assert re.search(r'<option selected value="customer_requested">', dialog)
    response = post_modify(client, shop["order_id"], token=csrf_from(page),
                           reason="customer_requested", quantities=[(shop["item_a"], 1)])
    assert response.status_code == 400
    assert "Customer contact details are required" in text_of(response)
    assert items_of(app, shop["order_id"])[0][2] == 0

    response = post_modify(client, shop["order_id"], token=csrf_from(page),
                           reason="customer_requested", request_contact="+1 555 010 4242",
                           request_channel="phone", requested_at="2024-01-02T10:30",
                           quantities=[(shop["item_a"], 1)])
    assert response.status_code == 302
    assert items_of(app, shop["order_id"])[0][2] == 1


# --- approval: the dialog becomes the approval request form ----------------------------------

def test_approval_required_turns_the_dialog_into_the_request_form(app, client, auth, factory):
    shop = two_item_shop(app, factory, role="fulfillment", status="on_hold")
    page = open_detail(auth, shop)
    dialog = text_of(page).split('id="modify-order-modal"')[1]
    assert "Request approval to remove items from order" in dialog
    assert "Submit Approval Request" in dialog and 'name="justification"' in dialog
    assert 'name="mode" type="hidden" value="approval"' in dialog
    token = csrf_from(page)

    missing = post_modify(client, shop["order_id"], token=token, mode="approval",
                          quantities=[(shop["item_b"], 1)])
    assert missing.status_code == 400 and "justification" in text_of(missing).lower()
    with app.app_context():
        assert db.session.scalar(db.select(ApprovalRequest).where(
            ApprovalRequest.order_id == shop["order_id"])) is None

    response = post_modify(client, shop["order_id"], token=token, mode="approval",
                           justification="The customer only wants one of them.",
                           quantities=[(shop["item_b"], 1)])

    assert response.status_code == 302
    page = text_of(client.get(response.headers["Location"]))
    with app.app_context():
        approval = db.session.scalar(db.select(ApprovalRequest).where(
            ApprovalRequest.order_id == shop["order_id"]))
        assert approval.payload["items"] == [{"item_id": shop["item_b"], "quantity": 1}]
        assert approval.justification == "The customer only wants one of them."
    assert f"Approval request #{approval.id} for items of order" in page
    assert items_of(app, shop["order_id"])[1][2] == 0  # nothing cancelled yet


def test_asking_for_approval_when_none_is_needed_changes_nothing(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    token = csrf_from(open_detail(auth, shop))
    response = post_modify(client, shop["order_id"], token=token, mode="approval",
                           justification="please", quantities=[(shop["item_a"], 1)])
    page = text_of(client.get(response.headers["Location"]))
    assert "no approval is needed" in page
    assert items_of(app, shop["order_id"])[0][2] == 0


# --- the page and the live summary -----------------------------------------------------------

def test_modify_page_works_without_javascript(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    auth(shop["user_id"])
    page = client.get(f"/orders/{shop['order_id']}/modify")
    assert page.status_code == 200
    assert "Remove items" in text_of(page) and f'name="qty-{shop["item_b"]}"' in text_of(page)
    response = post_modify(client, shop["order_id"], token=csrf_from(page),
                           quantities=[(shop["item_b"], 1)])
    assert response.status_code == 302
    assert items_of(app, shop["order_id"])[1][2] == 1


def test_preview_is_the_servers_summary_and_changes_nothing(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    open_detail(auth, shop)
    url = f"/orders/{shop['order_id']}/modify/preview"

    answer = client.get(url, query_string={f"qty-{shop['item_a']}": "1",
                                           f"qty-{shop['item_b']}": "2",
                                           "notify_customer": "y"}).json

    assert answer["ok"] is True and answer["units"] == 3
    assert answer["refund"] == "66.00" and answer["totals_after"]["total"] == "22.00"
    assert answer["closes_order"] is False and answer["line_errors"] == {}
    assert answer["notification"]["template"] == "order_partial_cancelled"
    assert {line["order_item_id"]: line["quantity"] for line in answer["lines"]} == \
        {shop["item_a"]: 1, shop["item_b"]: 2}

    bad = client.get(url, query_string={f"qty-{shop['item_b']}": "3",
                                        f"qty-{shop['item_a']}": "x"}).json
    assert bad["ok"] is False
    assert bad["line_errors"][str(shop["item_a"])] == "Enter a whole number."
    everything = client.get(url, query_string={f"qty-{shop['item_a']}": "3",
                                               f"qty-{shop['item_b']}": "2"}).json
    assert everything["closes_order"] is True and everything["refund"] == "88.00"
    assert order_row(app, shop["order_id"])["version"] == 1
    with app.app_context():
        assert db.session.get(OrderItem, shop["item_a"]).cancelled_quantity == 0


def test_preview_of_another_stores_order_is_404(app, client, auth, factory):
    shop = two_item_shop(app, factory)
    outsider = factory.user("store_manager", stores=[factory.store()])
    auth(outsider)
    assert client.get(f"/orders/{shop['order_id']}/modify/preview").status_code == 404
    assert client.get(f"/orders/{shop['order_id']}/modify").status_code == 404
    token = csrf_from(client.get("/"))
    assert post_modify(client, shop["order_id"], token=token,
                       quantities=[(shop["item_a"], 1)]).status_code == 404


# --- in a real browser -----------------------------------------------------------------------

@pytest.mark.browser
def test_modify_dialog_in_the_browser(app, factory, live_server, page):
    """Quantities -> the server's live summary -> review -> confirm -> the updated page."""
    from conftest import shot, sign_in as browser_sign_in

    shop = two_item_shop(app, factory, status="in_progress")
    browser_sign_in(app, page, live_server, shop["user_id"],
                    then=f"/orders/{shop['order_id']}")
    page.get_by_test_id("modify-order").click()
    page.wait_for_selector("#modify-order-modal.show")
    dialog = page.locator("#modify-order-modal")

    # Nothing chosen: the review says so and nothing is sent.
    dialog.get_by_test_id("review-modify").click()
    assert "Choose how many" in dialog.locator(".js-summary-problem").inner_text()

    dialog.locator(f"input[name='qty-{shop['item_b']}']").fill("3")  # more than open
    # Locators, not wait_for_function: a string function is eval, which the page's
    # Content-Security-Policy (rightly) refuses.
    expect(page.locator(f'.js-line-error[data-item-id="{shop["item_b"]}"]')).not_to_be_empty()
    dialog.locator(f"input[name='qty-{shop['item_b']}']").fill("1")
    dialog.locator(f"input[name='qty-{shop['item_a']}']").fill("2")
    summary = dialog.get_by_test_id("modify-summary")
    expect(page.locator(".js-summary-total")).to_have_text("$38.50")
    assert "Refund of $49.50 queued" in summary.inner_text()
    assert "3 items returned to stock" in summary.inner_text()
    dialog.locator("select[name=reason]").select_option("inventory_issues")
    shot(page, "partial-dialog")

    dialog.get_by_test_id("review-modify").click()
    confirm = dialog.get_by_test_id("modify-confirm-step")
    confirm.wait_for(state="visible")
    assert "Fulfillment has started" in confirm.inner_text()
    assert "Refund of $49.50" in confirm.inner_text()
    assert items_of(app, shop["order_id"])[0][2] == 0  # nothing sent yet
    shot(page, "partial-confirm")
    with page.expect_navigation():
        dialog.get_by_test_id("confirm-modify").click()

    assert "its total is now $38.50" in page.locator(".alert-success").inner_text()
    assert items_of(app, shop["order_id"]) == [(shop["item_a"], 3, 2), (shop["item_b"], 2, 1)]
    shot(page, "partial-done")


def test_cancel_and_modify_forms_ask_the_same_customer_request_fields(app, client, auth, factory):
    """One macro renders both: same names, `<mode>-<field>` ids, the store's time zone, and
    the hooks app.js uses (shown and required only for "Customer requested")."""
    shop = two_item_shop(app, factory)
    page = text_of(open_detail(auth, shop))
    with app.app_context():
        timezone = db.session.get(Order, shop["order_id"]).store.timezone
    fieldsets = re.findall(r'<fieldset class="customer-request[^"]*".*?</fieldset>', page, re.S)
    assert len(fieldsets) == 2  # the Cancel Order dialog and the Modify Order dialog
    for mode, fieldset in zip(("modal", "modify"), fieldsets, strict=True):
        assert "js-customer-request d-none" in fieldset  # hidden until the reason asks for it
        assert "Customer contact" in fieldset and f"(store time, {timezone})" in fieldset
        for name in ("request_contact", "request_channel", "requested_at"):
            assert f'id="{mode}-{name}"' in fieldset and f'name="{name}"' in fieldset
            assert f'for="{mode}-{name}"' in fieldset
        assert fieldset.count("js-request-required") == 2
    assert "js-requested-at" in fieldsets[0] and "js-requested-at" not in fieldsets[1]

    # An error is shown in the field, on the modify page too.
    response = post_modify(client, shop["order_id"], token=csrf_from(client.get("/")),
                           reason="customer_requested", request_channel="email",
                           quantities=[(shop["item_a"], 1)])
    assert response.status_code == 400
    [fieldset] = re.findall(r'<fieldset class="customer-request[^"]*".*?</fieldset>',
                            text_of(response), re.S)
    assert "d-none" not in fieldset.split(">")[0]
    assert 'id="modify-page-request_contact"' in fieldset and "is-invalid" in fieldset
    assert '<option selected value="email">' in fieldset
