"""The server-rendered panel: sign-in, the orders list, the detail page, the cancel form, /admin."""
import re
from datetime import timedelta

import pytest

from cancellation.adapters import set_failures
from models import ApprovalRequest, Order, Refund, StockLevel, User, db, utcnow

from conftest import csrf_from, login, wait_for
from helpers import email_of, reserved, text_of


def order_row(app, order_id):
    with app.app_context():
        order = db.session.get(Order, order_id)
        return {"status": order.status, "version": order.version, "number": order.number}


def post_cancel(client, order_id, *, token, version=1, **fields):
    data = {"csrf_token": token, "reason": "inventory_issues", "notify_customer": "y",
            "version": str(version), **fields}
    return client.post(f"/orders/{order_id}/cancel", data=data)


# --- sign-in ---------------------------------------------------------------------------------

def test_login_and_logout(app, client, auth, factory):
    shop = factory.shop(role="store_manager")
    assert client.get("/").status_code == 302  # anonymous: to the login page
    response = auth(shop["user_id"]).response
    assert response.headers["Location"] == "/dashboard"  # the landing page
    page = client.get("/")
    assert page.status_code == 200
    assert "Store Manager Tester" in text_of(page)
    assert "Welcome back" in text_of(page)

    response = client.post("/logout", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/").status_code == 302


def test_login_rejects_wrong_password(app, client, factory):
    shop = factory.shop(role="store_manager")
    response = login(client, email_of(app, shop["user_id"]), password="wrong-password")
    assert response.status_code == 401
    assert "do not match" in text_of(response)
    assert client.get("/").status_code == 302


def test_login_next_is_never_an_open_redirect(app, client, factory):
    shop = factory.shop(role="store_manager")
    page = client.get("/login")
    response = client.post("/login?next=//evil.example/steal",
                           data={"email": email_of(app, shop["user_id"]),
                                 "password": "secret-pass", "csrf_token": csrf_from(page)})
    assert response.headers["Location"] == "/dashboard"


# --- list ------------------------------------------------------------------------------------

def test_list_shows_only_own_store_orders(app, client, auth, factory):
    mine = factory.shop(role="store_manager")
    theirs = factory.shop(role="store_manager")
    auth(mine["user_id"])
    page = text_of(client.get("/"))
    assert order_row(app, mine["order_id"])["number"] in page
    assert order_row(app, theirs["order_id"])["number"] not in page
    # Asking for the other store by id does not widen the list either.
    page = text_of(client.get(f"/?store={theirs['store_id']}"))
    assert order_row(app, theirs["order_id"])["number"] not in page


def test_list_search_and_filters(app, client, auth, factory):
    store = factory.store()
    product = factory.product()
    factory.stock(store, product)
    alice = factory.customer()
    with app.app_context():
        from models import Customer
        db.session.get(Customer, alice).name = "Alice Zebrafinch"
        db.session.commit()
    old_pending = factory.order(store, [(product, 1, 1000)], customer_id=alice, age_days=10)
    new_on_hold = factory.order(store, [(product, 1, 1000)], status="on_hold")
    completed = factory.order(store, [(product, 1, 1000)], status="completed")
    user = factory.user("store_manager", stores=[store])
    auth(user)
    numbers = {oid: order_row(app, oid)["number"] for oid in (old_pending, new_on_hold,
                                                               completed)}

    page = text_of(client.get("/"))
    assert all(n in page for n in numbers.values())
    assert "Showing 1–3 of 3" in page
    # newest first
    assert page.index(numbers[completed]) < page.index(numbers[old_pending])

    page = text_of(client.get("/", query_string={"q": "zebrafinch"}))
    assert numbers[old_pending] in page and numbers[new_on_hold] not in page

    page = text_of(client.get("/", query_string={"q": numbers[new_on_hold]}))
    assert numbers[new_on_hold] in page and numbers[completed] not in page

    page = text_of(client.get("/", query_string={"status": "on_hold"}))
    assert numbers[new_on_hold] in page and numbers[old_pending] not in page

    cutoff = (utcnow() - timedelta(days=5)).date().isoformat()
    page = text_of(client.get("/", query_string={"to": cutoff}))
    assert numbers[old_pending] in page and numbers[completed] not in page
    page = text_of(client.get("/", query_string={"from": cutoff}))
    assert numbers[old_pending] not in page and numbers[completed] in page

    page = text_of(client.get("/", query_string={"q": "no-such-order-anywhere"}))
    assert "No orders match these filters" in page

    # Rubbish in the query string is ignored, never an error.
    assert client.get("/?status=bogus&store=x&from=yesterday&page=-4").status_code == 200


def test_list_store_filter_and_pagination_for_admin(app, client, auth, factory):
    store_a, store_b = factory.store(), factory.store()
    product = factory.product()
    a_orders = [factory.order(store_a, [(product, 1, 500)]) for _ in range(3)]
    b_order = factory.order(store_b, [(product, 1, 500)])
    admin = factory.user("admin")
    auth(admin)
    page = text_of(client.get("/", query_string={"store": store_a}))
    assert order_row(app, b_order)["number"] not in page
    assert all(order_row(app, o)["number"] in page for o in a_orders)

    app.config["ORDERS_PER_PAGE"] = 2
    try:
        page = text_of(client.get("/", query_string={"store": store_a, "page": 2}))
        assert "Showing 3–3 of 3" in page
        assert f"store={store_a}" in page  # page links keep the filters
    finally:
        app.config["ORDERS_PER_PAGE"] = 25


def test_row_menu_offers_cancel_only_when_allowed(app, client, auth, factory):
    shop = factory.shop(role="store_manager")
    done = factory.order(shop["store_id"], [(shop["product_id"], 1, 100)], status="completed")
    auth(shop["user_id"])
    page = text_of(client.get("/"))
    assert f'/orders/{shop["order_id"]}/cancel?next=' in page
    assert f"/orders/{done}/cancel?next=" not in page
    assert 'id="cancel-order-modal"' in page


# --- detail ----------------------------------------------------------------------------------

def test_detail_renders_and_masks_contact(app, client, auth, factory):
    shop = factory.shop(role="fulfillment")
    auth(shop["user_id"])
    response = client.get(f"/orders/{shop['order_id']}")
    page = text_of(response)
    assert response.status_code == 200
    assert order_row(app, shop["order_id"])["number"] in page
    assert "Cancel Order" in page and "Back to Orders" in page
    assert "$55.00" in page  # 2 x 25.00 + 10% tax
    assert "c***@example.com" in page and "***-***-2000" in page
    assert "+1 555 010 2000" not in page


def test_detail_shows_contact_to_roles_that_need_it(app, client, auth, factory):
    shop = factory.shop(role="customer_service")
    auth(shop["user_id"])
    page = text_of(client.get(f"/orders/{shop['order_id']}"))
    assert "+1 555 010 2000" in page


def test_other_stores_order_is_404(app, client, auth, factory):
    mine = factory.shop(role="store_manager")
    theirs = factory.shop(role="store_manager")
    token = auth(mine["user_id"]).csrf()
    assert client.get(f"/orders/{theirs['order_id']}").status_code == 404
    assert client.get(f"/orders/{theirs['order_id']}/cancel").status_code == 404
    assert post_cancel(client, theirs["order_id"], token=token).status_code == 404
    assert client.post(f"/orders/{theirs['order_id']}/return-stock",
                       data={"csrf_token": token}).status_code == 404
    assert order_row(app, theirs["order_id"])["status"] == "pending"


# --- cancel ----------------------------------------------------------------------------------

def test_cancel_through_the_form(app, client, auth, factory):
    shop = factory.shop(role="store_manager")
    assert reserved(app, shop["store_id"], shop["product_id"]) == 2
    auth(shop["user_id"])
    page = client.get(f"/orders/{shop['order_id']}")
    response = post_cancel(client, shop["order_id"], token=csrf_from(page),
                           notes="Batch failed QA", next=f"/orders/{shop['order_id']}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/orders/{shop['order_id']}"

    page = text_of(client.get(response.headers["Location"]))
    number = order_row(app, shop["order_id"])["number"]
    assert (f"Order {number} cancelled. Refund: $55.00 to the card (processor); customer will "
            "be notified.") in page
    assert "Batch failed QA" in page
    assert "order.cancelled" in page  # the audit timeline
    assert order_row(app, shop["order_id"])["status"] == "cancelled"
    assert reserved(app, shop["store_id"], shop["product_id"]) == 0


def test_cancel_from_the_list_returns_to_the_filtered_list(app, client, auth, factory):
    shop = factory.shop(role="store_manager")
    auth(shop["user_id"])
    page = client.get("/?status=pending")
    response = post_cancel(client, shop["order_id"], token=csrf_from(page),
                           next="/?status=pending")
    assert response.headers["Location"] == "/?status=pending"
    # An outside `next` is ignored.
    other = factory.order(shop["store_id"], [(shop["product_id"], 1, 100)])
    response = post_cancel(client, other, token=csrf_from(page), next="https://evil.example/")
    assert response.headers["Location"] == "/dashboard"  # safe_next's fallback: the landing page


def test_cancel_without_csrf_token_is_rejected(app, client, auth, factory):
    shop = factory.shop(role="store_manager")
    auth(shop["user_id"])
    response = client.post(f"/orders/{shop['order_id']}/cancel",
                           data={"reason": "inventory_issues", "version": "1"})
    assert response.status_code == 400
    assert order_row(app, shop["order_id"])["status"] == "pending"
    assert reserved(app, shop["store_id"], shop["product_id"]) == 2


def test_customer_requested_needs_contact_and_time(app, client, auth, factory):
    shop = factory.shop(role="customer_service")
    token = auth(shop["user_id"]).csrf(f"/orders/{shop['order_id']}")
    response = post_cancel(client, shop["order_id"], token=token, reason="customer_requested",
                           requested_at="")
    page = text_of(response)
    assert response.status_code == 400
    assert "Customer contact details are required" in page
    assert "The time of the customer&#39;s request is required" in page
    assert order_row(app, shop["order_id"])["status"] == "pending"

    response = post_cancel(client, shop["order_id"], token=token, reason="customer_requested",
                           request_contact="+1 555 222 3333", request_channel="phone",
                           requested_at="2024-01-02T09:30")
    assert response.status_code == 302
    assert order_row(app, shop["order_id"])["status"] == "cancelled"
    with app.app_context():
        cancellation = db.session.get(Order, shop["order_id"]).cancellations[0]
        assert cancellation.request_contact == "+1 555 222 3333"
        assert cancellation.request_channel == "phone"
        # Typed in store time (America/Los_Angeles, PST in January), stored as UTC.
        assert cancellation.requested_at.isoformat() == "2024-01-02T17:30:00"


def test_in_progress_order_needs_the_second_confirmation(app, client, auth, factory):
    shop = factory.shop(role="store_manager", status="in_progress")
    token = auth(shop["user_id"]).csrf(f"/orders/{shop['order_id']}")
    response = post_cancel(client, shop["order_id"], token=token)
    assert response.status_code == 400
    assert "Fulfillment has started" in text_of(response)
    assert order_row(app, shop["order_id"])["status"] == "in_progress"

    response = post_cancel(client, shop["order_id"], token=token, confirm_in_progress="y")
    assert response.status_code == 302
    assert order_row(app, shop["order_id"])["status"] == "cancelled"


def test_stale_version_offers_a_refresh(app, client, auth, factory):
    shop = factory.shop(role="store_manager")
    token = auth(shop["user_id"]).csrf(f"/orders/{shop['order_id']}")
    response = post_cancel(client, shop["order_id"], token=token, version=7)
    assert response.status_code == 302
    page = text_of(client.get(response.headers["Location"]))
    assert "changed by someone else" in page
    assert "it is now version 1" in page
    assert re.search(rf'<a href="/orders/{shop["order_id"]}" class="alert-link">Refresh</a>',
                     page)
    assert order_row(app, shop["order_id"])["status"] == "pending"


def test_blocker_is_reported(app, client, auth, factory):
    shop = factory.shop(role="store_manager", billing_hold=True)
    token = auth(shop["user_id"]).csrf(f"/orders/{shop['order_id']}")
    response = post_cancel(client, shop["order_id"], token=token)
    page = text_of(client.get(response.headers["Location"]))
    assert "alert-danger" in page and "billing hold" in page.lower()
    assert order_row(app, shop["order_id"])["status"] == "pending"


def test_approval_required_files_a_request(app, client, auth, factory):
    shop = factory.shop(role="fulfillment", status="on_hold")
    token = auth(shop["user_id"]).csrf(f"/orders/{shop['order_id']}")
    response = post_cancel(client, shop["order_id"], token=token)
    page = text_of(client.get(response.headers["Location"]))
    with app.app_context():
        approval = db.session.scalar(db.select(ApprovalRequest).where(
            ApprovalRequest.order_id == shop["order_id"]))
    assert approval is not None
    assert f"Approval request #{approval.id} filed" in page
    assert order_row(app, shop["order_id"])["status"] == "on_hold"


def test_full_page_cancel_form_works_without_javascript(app, client, auth, factory):
    shop = factory.shop(role="store_manager", series_id="S-panel-1")
    auth(shop["user_id"])
    page = client.get(f"/orders/{shop['order_id']}/cancel")
    assert page.status_code == 200
    assert "This and all future orders of the series" in text_of(page)
    response = post_cancel(client, shop["order_id"], token=csrf_from(page),
                           scope="this_instance")
    assert response.status_code == 302
    assert order_row(app, shop["order_id"])["status"] == "cancelled"


# --- manual handling -------------------------------------------------------------------------

def test_return_items_to_stock_after_missing_stock_row(app, client, auth, factory):
    store = factory.store()
    product = factory.product()  # no stock row at this store
    order_id = factory.order(store, [(product, 3, 1000)])
    manager = factory.user("store_manager", stores=[store])
    token = auth(manager).csrf(f"/orders/{order_id}")
    post_cancel(client, order_id, token=token)
    page = text_of(client.get(f"/orders/{order_id}"))
    assert "Needs manual handling" in page and "Return items to stock" in page

    response = client.post(f"/orders/{order_id}/return-stock", data={"csrf_token": token})
    assert response.status_code == 302
    page = text_of(client.get(response.headers["Location"]))
    assert "Returned 3 unit(s) to stock" in page
    with app.app_context():
        stock = db.session.scalar(db.select(StockLevel).where(
            StockLevel.store_id == store, StockLevel.product_id == product))
        assert stock.on_hand == 3


def test_manual_actions_require_their_capability(app, client, auth, factory):
    shop = factory.shop(role="fulfillment")
    token = auth(shop["user_id"]).csrf()
    assert client.post(f"/orders/{shop['order_id']}/return-stock",
                       data={"csrf_token": token}).status_code == 403
    assert client.post(f"/orders/{shop['order_id']}/refund",
                       data={"csrf_token": token}).status_code == 403


def test_retry_refund_button(app, client, auth, factory, worker):
    """A refund the gateway keeps declining shows its error and a retry button that works."""
    shop = factory.shop(role="store_manager")
    token = auth(shop["user_id"]).csrf(f"/orders/{shop['order_id']}")
    with app.app_context():
        set_failures("refund", -1)
    try:
        post_cancel(client, shop["order_id"], token=token)

        def refund_out_of_attempts():
            with app.app_context():
                refund = db.session.scalar(
                    db.select(Refund).where(Refund.order_id == shop["order_id"]))
                done = (refund is not None and refund.status == "failed"
                        and refund.next_attempt_at is None)
                return refund.id if done else None

        refund_id = wait_for(refund_out_of_attempts, timeout=30,
                             message="the refund to fail its automatic attempts")
    finally:
        with app.app_context():
            set_failures("refund", 0)
    page = text_of(client.get(f"/orders/{shop['order_id']}"))
    assert "declined the refund" in page and f"/refunds/{refund_id}/retry" in page
    response = client.post(f"/orders/{shop['order_id']}/refunds/{refund_id}/retry",
                           data={"csrf_token": token})
    assert response.status_code == 302
    assert "sent to the gateway again" in text_of(client.get(response.headers["Location"]))

    def refund_succeeded():
        with app.app_context():
            return db.session.get(Refund, refund_id).status == "succeeded"

    wait_for(refund_succeeded, message="the retried refund to be paid")


# --- mailbox and admin -----------------------------------------------------------------------

def test_mailbox_is_admin_only(app, client, auth, factory):
    manager = factory.shop(role="store_manager")
    auth(manager["user_id"])
    assert client.get("/mailbox").status_code == 403
    assert "Mailbox" not in text_of(client.get("/"))

    admin_client = app.test_client()
    auth(role="admin", client=admin_client)
    page = admin_client.get("/mailbox")
    assert page.status_code == 200 and "simulated mail relay" in text_of(page)


def test_admin_is_for_admins_only(app, client, auth, factory):
    response = client.get("/admin/")
    assert response.status_code == 302 and "/login?next=/admin/" in response.headers["Location"]
    assert client.get("/admin/users/").status_code == 302

    shop = factory.shop(role="store_manager")
    auth(shop["user_id"])
    for path in ("/admin/", "/admin/users/", "/admin/stores/", "/admin/products/",
                 "/admin/stock/", "/admin/settings/"):
        assert client.get(path).status_code == 403, path


# Flask-Admin 2.2's Select2 widget still yields tuples from iter_choices(), which WTForms 3.3
# deprecates; that is inside the library, not ours.
@pytest.mark.filterwarnings("ignore:Yielding raw tuples from iter_choices:DeprecationWarning")
@pytest.mark.parametrize("with_token", [True, False])
def test_admin_creates_user_with_password(app, client, auth, factory, with_token):
    store = factory.store()
    auth(role="admin")
    page = client.get("/admin/users/new/")
    assert page.status_code == 200
    assert "password_hash" not in text_of(page)
    email = f"new-{int(with_token)}-{store}@test.example"
    data = {"email": email.upper(), "name": "New Person", "role": "customer_service",
            "stores": str(store), "active": "y", "new_password": "a-long-password"}
    if with_token:
        data["csrf_token"] = re.search(r'name="csrf_token" value="([^"]+)"',
                                       text_of(page)).group(1)
    response = client.post("/admin/users/new/", data=data)
    assert response.status_code == (302 if with_token else 400)
    with app.app_context():
        user = User.by_email(email)
        if not with_token:
            assert user is None
            return
        assert user is not None and user.email == email
        assert user.check_password("a-long-password")
        assert user.store_ids == {store}
    assert email in text_of(client.get("/admin/users/", query_string={"search": email}))


@pytest.mark.filterwarnings("ignore:Yielding raw tuples from iter_choices:DeprecationWarning")
def test_admin_edits_are_audited_and_admins_cannot_lock_themselves_out(app, client, auth, factory):
    from models import AuditEvent

    store = factory.store()
    admin_id = factory.user("admin")
    clerk = factory.user("fulfillment", stores=[store])
    auth(admin_id)

    def save(user_id, **changes):
        page = text_of(client.get(f"/admin/users/edit/?id={user_id}"))
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        with app.app_context():
            user = db.session.get(User, user_id)
            data = {"csrf_token": token, "email": user.email, "name": user.name,
                    "role": user.role, "stores": [str(s) for s in user.store_ids],
                    "active": "y" if user.active else ""}
        data.update(changes)
        return client.post(f"/admin/users/edit/?id={user_id}", data=data)

    assert save(clerk, role="customer_service", new_password="another-password").status_code \
        == 302
    with app.app_context():
        user = db.session.get(User, clerk)
        assert user.role == "customer_service" and user.check_password("another-password")
        event = db.session.scalar(db.select(AuditEvent).where(
            AuditEvent.action == "admin.users.updated", AuditEvent.target_id == str(clerk)))
        assert event.before["role"] == "fulfillment"
        assert event.after["role"] == "customer_service" and event.after["password_changed"]
        assert "password_hash" not in event.after

    page = text_of(save(admin_id, role="store_manager"))
    assert "cannot deactivate your own account" in page
    with app.app_context():
        assert db.session.get(User, admin_id).role == "admin"
