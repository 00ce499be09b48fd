"""Customer contact details typed into a cancellation request never reach roles that may not
see them — not through the order page's audit timeline, nor through v2's audit log."""
import re

from conftest import bearer

CONTACT = "jane.roe@example.com"


def file_customer_request(client, factory):
    """Customer service asks (in_progress needs approval) with the customer's e-mail as contact."""
    shop = factory.shop(role="customer_service", status="in_progress")
    response = client.put(
        f"/api/v1/orders/{shop['order_id']}/status", headers=bearer(shop["token"]),
        json={"status": "cancelled", "reason": "customer_requested",
              "customer_request": {"contact": CONTACT, "requested_at": "2026-01-05T10:00:00Z",
                                   "channel": "email"}})
    assert response.status_code == 202, response.json
    return shop


def test_v2_audit_log_masks_contact_for_ops_not_for_admin(app, client, factory):
    shop = file_customer_request(client, factory)
    ops, admin = factory.user("ops_engineer"), factory.user("admin")
    url = f"/api/v2/orders/{shop['order_id']}/audit-log"

    as_ops = client.get(url, headers=bearer(factory.token(ops))).get_data(as_text=True)
    assert CONTACT not in as_ops and "j***@example.com" in as_ops

    as_admin = client.get(url, headers=bearer(factory.token(admin))).get_data(as_text=True)
    assert CONTACT in as_admin


def test_order_timeline_masks_contact_for_fulfillment(app, client, auth, factory):
    shop = file_customer_request(client, factory)
    fulfillment = factory.user("fulfillment", stores=[shop["store_id"]])
    auth(fulfillment)
    page = client.get(f"/orders/{shop['order_id']}").get_data(as_text=True)
    assert "approval.requested" in page
    assert CONTACT not in page


# --- free-text contact fields are withheld whole ---------------------------------------------

FREE_TEXT = "Jane Doe <jane.doe@example.com>, cell 555-867-5309, 12 Elm St"
PIECES = ("Jane Doe", "jane.doe", "example.com>", "555-867-5309", "*-5309", "12 Elm St",
          "Elm St")
# Nor the last four digits on their own — but as a word: "5309" turns up by chance inside the
# many test stores' names ("Store 123-45-85309123") that a page's store filter lists.
LAST_FOUR = re.compile(r"(?<![\w-])5309(?![\w-])")


def customer_request(contact):
    return {"status": "cancelled", "reason": "customer_requested",
            "customer_request": {"contact": contact, "requested_at": "2026-01-05T10:00:00Z",
                                 "channel": "phone"}}


def assert_withheld(text):
    leaked = [piece for piece in PIECES if piece in text] + LAST_FOUR.findall(text)
    assert not leaked, leaked


def test_free_text_contact_is_withheld_whole_for_roles_without_contact(app, auth, factory):
    """One request filed for approval (in_progress) and one cancellation done directly (pending):
    neither shows any piece of the contact to fulfillment or ops — order page, audit page, audit
    CSV, v2 audit log, the approval request — while an admin reads it all."""
    shop = factory.shop(role="customer_service", status="in_progress")
    client = app.test_client()
    filed = client.put(f"/api/v1/orders/{shop['order_id']}/status",
                       headers=bearer(shop["token"]),
                       json=customer_request(FREE_TEXT))
    assert filed.status_code == 202, filed.json
    approval_id = filed.json["approval_request"]["id"]
    assert filed.json["approval_request"]["requested_cancellation"]["request_contact"] \
        == FREE_TEXT  # customer service may see contact details
    product = factory.product()
    factory.stock(shop["store_id"], product)
    direct = factory.order(shop["store_id"], [(product, 1, 1000)],
                           customer_id=shop["customer_id"])
    done = client.put(f"/api/v1/orders/{direct}/status", headers=bearer(shop["token"]),
                      json=customer_request(FREE_TEXT))
    assert done.status_code == 200, done.json

    fulfillment = factory.user("fulfillment", stores=[shop["store_id"]])
    ops = factory.user("ops_engineer")
    for viewer in (fulfillment, ops):
        token = factory.token(viewer)
        approval = client.get(f"/api/v1/approval_requests/{approval_id}",
                              headers=bearer(token))
        assert approval.status_code == 200
        assert approval.json["approval_request"]["requested_cancellation"][
            "request_contact"] == "(withheld)"
        browser = app.test_client()
        auth(viewer, client=browser)
        for order_id in (shop["order_id"], direct):
            page = browser.get(f"/orders/{order_id}")
            assert page.status_code == 200
            assert_withheld(page.get_data(as_text=True))
        assert "Customer request: (withheld)" in browser.get(f"/orders/{direct}").get_data(
            as_text=True)
    ops_token = factory.token(ops)
    for order_id in (shop["order_id"], direct):
        log = client.get(f"/api/v2/orders/{order_id}/audit-log", headers=bearer(ops_token))
        assert log.status_code == 200
        assert_withheld(log.get_data(as_text=True))
    assert "(withheld)" in client.get(f"/api/v2/orders/{shop['order_id']}/audit-log",
                                      headers=bearer(ops_token)).get_data(as_text=True)
    auditor = app.test_client()
    auth(ops, client=auditor)
    page = auditor.get(f"/audit/?store={shop['store_id']}")
    assert page.status_code == 200
    assert_withheld(page.get_data(as_text=True))
    export = auditor.get(f"/audit/export.csv?store={shop['store_id']}")
    csv_text = b"".join(export.response).decode()
    assert "(withheld)" in csv_text
    assert_withheld(csv_text)

    admin = factory.user("admin")
    as_admin = client.get(f"/api/v2/orders/{shop['order_id']}/audit-log",
                          headers=bearer(factory.token(admin))).get_data(as_text=True)
    assert "555-867-5309" in as_admin and "12 Elm St" in as_admin


def test_a_contact_that_is_one_phone_number_keeps_its_masked_shape(app, client, factory):
    shop = factory.shop(role="customer_service", status="in_progress")
    filed = client.put(f"/api/v1/orders/{shop['order_id']}/status",
                       headers=bearer(shop["token"]),
                       json=customer_request("+1 (555) 867-5309"))
    assert filed.status_code == 202, filed.json
    ops = factory.token(factory.user("ops_engineer"))
    log = client.get(f"/api/v2/orders/{shop['order_id']}/audit-log", headers=bearer(ops))
    assert "***-***-5309" in log.get_data(as_text=True)
    assert "867-5309" not in log.get_data(as_text=True)
