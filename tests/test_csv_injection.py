"""Every CSV we produce is safe to open in a spreadsheet: a text cell that starts like a formula
(=, +, -, @, tab, carriage return) is prefixed with a single quote (OWASP "CSV injection"),
wherever its text came from — a request id anyone can send, a product's name."""
import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

from conftest import cancel, csrf_from

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
REQUEST_ID = "-1+cmd|' /C calc'!A0"


def csv_rows(response):
    assert response.status_code == 200, response.status_code
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def assert_no_formula(rows):
    starts = [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]
    assert not starts, starts


def test_a_request_id_sent_on_a_failed_login_is_no_formula_in_the_audit_csv(app, auth, factory):
    """Anyone can send X-Request-ID, signed in or not; the failed sign-in is audited with it.
    However the header is bounded, it never reaches the export as a live formula."""
    client = app.test_client()
    token = csrf_from(client.get("/login"))
    failed = client.post("/login", headers={"X-Request-ID": REQUEST_ID}, data={
        "email": "nobody@formula-test.example", "password": "wrong", "csrf_token": token})
    assert failed.status_code == 401  # the form again, with its error
    rows = csv_rows(auth(role="admin", client=app.test_client()).client.get(
        "/audit/export.csv?action=auth.login_failed"))
    header, mine = rows[0], [row for row in rows[1:] if "formula-test.example" in row[9]]
    assert mine, "the failed sign-ins were not audited"
    request_ids = {row[header.index("request_id")] for row in mine}
    assert REQUEST_ID not in request_ids
    assert_no_formula(rows)


def test_any_text_that_starts_like_a_formula_is_quoted_in_the_audit_csv(app, auth, factory):
    """Recorded as a request would record it; each of the six starts, '-' before a digit too."""
    from cancellation.audit import AuditContext, record
    from models import db

    store = factory.store()
    payloads = ["=HYPERLINK(\"http://x\")", "+SUM(1)", "-2+3+cmd|' /C calc'!A0", "@SUM(1)",
                "\tTAB", "\rCR"]
    with app.app_context():
        for payload in payloads:
            record(None, "test.formula", target_type="test", target_id=1, store_id=store,
                   after={"notes": payload}, context=AuditContext(request_id=payload))
        db.session.commit()
    rows = csv_rows(auth(role="admin", client=app.test_client()).client.get(
        f"/audit/export.csv?store={store}&action=test.formula"))
    header = rows[0]
    assert sorted(row[header.index("request_id")] for row in rows[1:]) \
        == sorted("'" + payload for payload in payloads)
    assert all(row[header.index("seq")].isdigit() for row in rows[1:])
    assert_no_formula(rows)


def test_a_product_named_like_a_formula_is_quoted_in_the_compliance_csv(app, client, auth, factory):
    from models import Product, Store, db

    store = factory.store()
    with app.app_context():
        db.session.get(Store, store).timezone = "UTC"
        db.session.commit()
    product = factory.product(2500)
    name = "-2+3+cmd|' /C calc'!A0"
    with app.app_context():
        db.session.get(Product, product).name = name
        db.session.commit()
    factory.stock(store, product)
    manager = factory.user("store_manager", stores=[store])
    order_id = factory.order(store, [(product, 1, 2500)])
    assert cancel(client, order_id, factory.token(manager)).status_code == 200
    day = datetime.now(ZoneInfo("UTC")).date()
    rows = csv_rows(auth(manager, client=app.test_client()).client.get(
        f"/audit/compliance.csv?store={store}&date={day}"))
    header, [row] = rows[0], rows[1:]
    assert row[header.index("product")] == "'" + name
    # Amounts stay numbers: quoted only when text starts like a formula.
    assert row[header.index("unit_price")] == "25.00"
    assert row[header.index("line_amount")] == "25.00"
    assert_no_formula(rows)
