"""Bad input is a clear 4xx, never a 500: dates at the edges of the calendar, numbers past any
column, NUL characters, JSON nested past the parser; no route reads a body over the limit,
chunked or not; a 405 names the methods that are allowed."""
import json
import re
import select
import socket
import uuid
from urllib.parse import urlsplit

import pytest

from conftest import Factory, bearer, cancel

HUGE = "99999999999999999999"


@pytest.fixture
def manager(app, factory, auth):
    """A store manager signed in, with one order of their store cancelled today."""
    from models import Order, Store, db

    shop = factory.shop(role="store_manager")
    assert cancel(app.test_client(), shop["order_id"], shop["token"]).status_code == 200
    with app.app_context():
        db.session.get(Store, shop["store_id"]).timezone = "Asia/Tokyo"  # east of UTC
        db.session.commit()
        number = db.session.get(Order, shop["order_id"]).number
    client = auth(shop["user_id"], client=app.test_client()).client
    return dict(shop, client=client, number=number)


def text_of(response):
    return b"".join(response.response).decode() if response.is_streamed \
        else response.get_data(as_text=True)


def test_a_date_at_the_edge_of_the_calendar_is_a_clear_400(manager):
    """Once a 500 (the day after 9999-12-31 cannot be computed): now a 400 naming the field,
    on the orders list, the audit log and its export; dates inside the calendar still work."""
    client, number = manager["client"], manager["number"]
    for url in ("/?to=9999-12-31", "/?from=0001-01-01", "/audit/?to=9999-12-31",
                "/audit/export.csv?to=9999-12-31", "/audit/?from=0001-01-01"):
        response = client.get(url)
        assert response.status_code == 400, (url, response.status_code)
        assert "date must be between 0001-01-02 and 9999-12-30" in text_of(response), url
    listed = client.get("/?from=0001-01-02&to=9999-12-30")
    assert listed.status_code == 200 and number in listed.get_data(as_text=True)
    audit = client.get(f"/audit/?to=9999-12-30&order={number}")
    assert audit.status_code == 200 and "No events" not in audit.get_data(as_text=True)
    export = client.get(f"/audit/export.csv?to=9999-12-30&order={number}")
    assert export.status_code == 200 and text_of(export).count("\n") >= 2  # header and events


def test_the_dashboard_takes_any_period_of_the_calendar(manager):
    client = manager["client"]
    for query in ("period=custom&from=0001-01-01&to=0001-01-01", "from=0001-01-01",
                  "to=9999-12-31", "period=custom&from=9999-12-31&to=0001-01-01",
                  f"store={HUGE}"):
        assert client.get(f"/dashboard?{query}").status_code == 200, query


def test_the_compliance_report_refuses_days_it_cannot_bound(manager):
    client, store = manager["client"], manager["store_id"]
    for day in ("9999-12-31", "0001-01-01", "2026-02-30", "", "\x00"):
        response = client.get(f"/audit/compliance.csv?store={store}&date={day}")
        assert response.status_code == 400, (day, response.status_code)
        assert "YYYY-MM-DD" in response.get_data(as_text=True)
    # The first day it can bound, in a store east of UTC: an empty report.
    first = client.get(f"/audit/compliance.csv?store={store}&date=0001-01-02")
    assert first.status_code == 200 and text_of(first).count("\n") == 1
    for query in (f"store={HUGE}&date=2026-01-05", f"store=-{HUGE}&date=2026-01-05",
                  "store=2147483648&date=2026-01-05"):
        assert client.get(f"/audit/compliance.csv?{query}").status_code == 404, query


def test_an_order_filter_past_any_id_is_a_clear_400(manager):
    client = manager["client"]
    for order in (HUGE, "2147483648"):
        page = client.get(f"/audit/?order={order}")
        assert page.status_code == 400, order
        assert "No order has the id" in page.get_data(as_text=True)
    page = client.get("/audit/?order=\u00b2")  # not a number: a number search finding nothing
    assert page.status_code == 200 and "No events" in page.get_data(as_text=True)
    # An order's id still finds its events.
    page = client.get(f"/audit/?order={manager['order_id']}")
    assert page.status_code == 200


def test_nul_characters_in_filters_are_ignored(app, manager):
    """PostgreSQL refuses NUL in a query's text: such a filter is dropped like any unusable one
    (a bookmark never errors)."""
    client, number = manager["client"], manager["number"]
    assert number in client.get("/?q=%00").get_data(as_text=True)
    for query in ("actor=%00", "action=a%00b", "order=%00", "store=%00", "from=%00"):
        assert client.get(f"/audit/?{query}").status_code == 200, query
        assert client.get(f"/audit/export.csv?{query}").status_code == 200, query
    assert client.get("/?q=%ff%fe%00&status=%00&store=%00").status_code == 200


def test_json_nested_past_the_parser_is_a_400(app, client, factory):
    shop = factory.shop(role="admin")
    for path, method in ((f"/api/v2/orders/{shop['order_id']}/cancel", client.post),
                         (f"/api/v2/orders/{shop['order_id']}/reinstate", client.post),
                         (f"/api/v1/orders/{shop['order_id']}/status", client.put)):
        response = method(path, data="[" * 1000, content_type="application/json",
                          headers=bearer(shop["token"], **{"X-Idempotency-Key":
                                                           str(uuid.uuid4())}))
        assert response.status_code == 400, (path, response.get_data(as_text=True))
        assert response.json["error"]["code"] == "validation_error"


# --- the body limit --------------------------------------------------------------------------

def test_a_body_over_the_limit_is_refused_before_it_is_read(app, client, factory):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == 1024 * 1024
    too_big = b'{"email": "' + b"a" * limit + b'", "password": "x"}'
    response = client.post("/api/auth/token", data=too_big, content_type="application/json")
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"
    panel = client.post("/login", data={"email": "a" * limit, "password": "x"})
    assert panel.status_code == 413


def read_response(sock):
    """The HTTP answer on `sock`: its head, then as many body bytes as Content-Length says (the
    server may keep the connection open after refusing a body it did not read)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return (head + b"\r\n\r\n" + body).decode("utf-8", "replace")


def chunked_post(base, path, total_bytes, chunk=64 * 1024, timeout=30):
    """POST a chunked JSON body of `total_bytes` over a real socket. Stops sending as soon as the
    server answers; returns (status line, headers and body text, bytes sent)."""
    address = urlsplit(base)
    sock = socket.create_connection((address.hostname, address.port), timeout=timeout)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                  "Connection: close\r\n\r\n").encode())
    piece = b'{"email": "' + b"a" * (chunk - 11)
    sent = 0
    try:
        while sent < total_bytes:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered (and stopped reading)
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
            piece = b"a" * chunk
        else:
            sock.sendall(b'0\r\n\r\n')
    except (BrokenPipeError, ConnectionResetError):
        pass
    text = read_response(sock)
    sock.close()
    return text.split("\r\n", 1)[0], text, sent


def test_a_chunked_body_over_the_limit_is_refused_over_a_real_socket(app, live_server):
    """No Content-Length to check up front: the server stops reading at the limit."""
    total = 32 * 1024 * 1024
    status, text, sent = chunked_post(live_server, "/api/auth/token", total)
    assert " 413 " in status + " ", text[:500]
    assert json.loads(text.split("\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"
    assert sent < total  # it answered long before the whole body was sent


def test_a_chunked_body_under_the_limit_is_read(app, live_server, factory):
    """The limit is on size, not on chunking: a small chunked body is parsed as any other."""
    address = urlsplit(live_server)
    body = json.dumps({"email": "nobody@chunked.example", "password": "wrong"}).encode()
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    sock.sendall((f"POST /api/auth/token HTTP/1.1\r\nHost: {address.netloc}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                  "Connection: close\r\n\r\n").encode()
                 + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    answer = read_response(sock)
    sock.close()
    assert answer.startswith("HTTP/1.1 401"), answer[:200]


# --- 405 -------------------------------------------------------------------------------------

def test_a_method_not_allowed_names_the_allowed_ones(client, factory):
    token = factory.shop(role="admin")["token"]
    response = client.delete("/api/v1/orders", headers=bearer(token))
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    assert {"GET", "HEAD"} <= {m.strip() for m in response.headers["Allow"].split(",")}
    page = client.delete("/dashboard")
    assert page.status_code == 405 and "GET" in page.headers["Allow"]


# --- panel forms -----------------------------------------------------------------------------

def open_order_of(app, manager):
    """Another open order of the manager's store (the fixture's own is cancelled)."""
    from models import Order, db

    with app.app_context():
        order = db.session.get(Order, manager["order_id"])
        store, product = order.store_id, order.items[0].product_id
    return Factory(app).order(store, [(product, 1, 1000)])


@pytest.mark.parametrize("typed", ["9999-12-31T23:59", "0001-01-01T00:00"])
def test_a_request_time_at_the_calendar_edges_is_a_field_error(app, manager, typed):
    """Typed in store time (Tokyo) and converted to UTC: at either end of the calendar it is
    the field's error on the form again (400), never a 500."""
    from conftest import csrf_from

    client, order_id = manager["client"], open_order_of(app, manager)
    token = csrf_from(client.get(f"/orders/{order_id}/cancel"))
    for path in (f"/orders/{order_id}/cancel", f"/orders/{order_id}/approval-request"):
        response = client.post(path, data={
            "csrf_token": token, "reason": "customer_requested",
            "request_contact": "jane@example.com", "request_channel": "phone",
            "requested_at": typed, "justification": "edge", "version": "1"})
        assert response.status_code == 400, (path, response.status_code)
        assert "Enter a date between 0001-01-02 and 9999-12-30." in response.get_data(
            as_text=True)


def test_a_version_past_any_column_is_refused_not_a_500(app, manager):
    from conftest import csrf_from

    client, open_order = manager["client"], open_order_of(app, manager)
    page = client.get(f"/orders/{open_order}/cancel")
    for version in (HUGE, "-1", "0", "2147483648"):
        response = client.post(f"/orders/{open_order}/cancel", data={
            "csrf_token": csrf_from(page), "reason": "inventory_issues", "version": version})
        assert response.status_code in (302, 400, 409), (version, response.status_code)
