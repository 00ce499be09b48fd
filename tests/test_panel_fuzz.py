"""Property-based fuzzing of the web panel: every GET page with arbitrary query strings and every
panel form posted with arbitrary field values, signed in, never answers a server error.

The JSON API is fuzzed from its OpenAPI document (test_api_fuzz.py); the panel has no such
document, so its inputs are listed here — the names each view reads — and hypothesis fills them
with what a person, a bookmark or a bot may send: any text (NUL and non-UTF-8 bytes included),
dates at the edges of the calendar, numbers past any column, repeated and unknown names.

Bounded: a fixed number of examples per route, derandomized (the same cases every run), no
deadline. Path ids point at real rows (a store's orders, an approval request, a bulk job), so
the cases reach the views' parsing and the domain behind it rather than only 404s.
"""
import re
from datetime import date
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from conftest import Factory, csrf_from, login
from helpers import email_of

MAX_EXAMPLES = 30
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])

EDGES = ["", " ", "0", "-1", "1", "2147483647", "2147483648", "99999999999999999999",
         "-99999999999999999999", "1e309", "NaN", "0001-01-01", "9999-12-31", "10000-01-01",
         "2026-02-30", "0000-00-00", "\x00", "a\x00b", "²", "٣", "y", "n", "on", "custom", "7",
         "all_future", "this_instance", "customer_requested", "inventory_issues", "pending",
         "=1+1", "'; DROP TABLE orders; --", "%", "_", "\\", "🙂", "\ufeff", "\u202e",
         "2026-01-05T10:00", "0001-01-01T00:00", "9999-12-31T23:59", "x" * 3000]

# A query-string or form value: percent-encoded bytes, so anything — non-UTF-8 too — is sent.
VALUES = st.one_of(
    st.sampled_from(EDGES).map(lambda v: quote(v, safe="")),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.dates(min_value=date.min, max_value=date.max).map(date.isoformat),
    st.text(max_size=40).map(lambda v: quote(v, safe="")),
    st.binary(max_size=24).map(lambda v: quote_from_bytes(v, safe="")),
)


# Half the time a value of the field's own kind, at the edges more often than not.
DAYS = st.one_of(st.sampled_from([date.min, date.max, date(1, 1, 2), date(9999, 12, 30)]),
                 st.dates())
KINDS = {
    "date": DAYS.map(date.isoformat),
    "moment": st.one_of(
        st.sampled_from(["0001-01-01T00:00", "9999-12-31T23:59", "0001-01-02T00:00"]),
        st.tuples(DAYS, st.sampled_from(["00:00", "23:59"])).map(
            lambda day_time: f"{day_time[0].isoformat()}T{day_time[1]}")),
    "number": st.one_of(st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63, 10**20]),
                        st.integers()).map(str),
}
KIND_OF = {"from": "date", "to": "date", "date": "date", "requested_at": "moment",
           "version": "number", "page": "number", "store": "number", "order": "number",
           "order_ids": "number", "matching_total": "number", "max_order_id": "number"}


def values_for(name):
    kind = KIND_OF.get(name) or ("number" if name.startswith("qty-") else None)
    return st.one_of(VALUES, KINDS[kind]) if kind else VALUES


def named_values(names):
    return st.sampled_from(names).flatmap(
        lambda name: st.tuples(st.just(name), values_for(name)))


def query_strings(names):
    """Some of the view's own names (repeated at times) and now and then an unknown one."""
    pair = named_values(names + ["unknown", "page"])
    return st.lists(pair, max_size=8).map(
        lambda pairs: "&".join(f"{quote(name, safe='')}={value}" for name, value in pairs))


@pytest.fixture(scope="module")
def panel(app):
    """One store with orders in every state, a bulk job and an approval request; an admin and
    the store's manager, each signed in on their own client."""
    f = Factory(app)
    store = f.store()
    product = f.product(2000)
    f.stock(store, product, on_hand=10_000)
    customer = f.customer()
    orders = [f.order(store, [(product, 2, 2000)], customer_id=customer, status=status)
              for status in ("pending", "pending", "in_progress", "on_hold", "completed",
                             "cancelled")]
    manager, clerk, admin = (f.user("store_manager", stores=[store]),
                             f.user("fulfillment", stores=[store]), f.user("admin"))
    clients = {}
    for name, user_id in (("admin", admin), ("manager", manager), ("clerk", clerk)):
        client = app.test_client()
        assert login(client, email_of(app, user_id)).status_code == 302
        clients[name] = client
    # An approval request, filed by the clerk (in_progress needs approval).
    page = clients["clerk"].get(f"/orders/{orders[2]}/cancel")
    clients["clerk"].post(f"/orders/{orders[2]}/approval-request", data={
        "csrf_token": csrf_from(page), "reason": "inventory_issues",
        "justification": "fuzz fixture", "notify_customer": "y"})
    from models import ApprovalRequest, OrderItem, db

    with app.app_context():
        approval = db.session.scalar(db.select(ApprovalRequest.id).where(
            ApprovalRequest.order_id == orders[2]))
        item = db.session.scalar(db.select(OrderItem.id).where(OrderItem.order_id == orders[0]))
    assert approval is not None
    return {"store": store, "orders": orders, "item": item, "approval": approval,
            "clients": clients, "csrf": {name: csrf_from(c.get("/")) for name, c in
                                         clients.items()}}


def assert_no_server_error(response, what):
    body = response.get_data()  # a streamed CSV fails here, if it fails at all
    assert response.status_code < 500, (what, response.status_code, body[:500])


# --- GET: every page's query string ----------------------------------------------------------

def get_routes(panel):
    order, item = panel["orders"][0], panel["item"]
    return {
        "/": ["q", "status", "store", "from", "to", "page"],
        "/dashboard": ["store", "period", "from", "to"],
        "/audit/": ["actor", "action", "store", "order", "from", "to", "page"],
        "/audit/export.csv": ["actor", "action", "store", "order", "from", "to"],
        "/audit/compliance.csv": ["store", "date"],
        "/approvals": ["tab"],
        "/bulk-jobs": ["running", "page"],
        f"/orders/{order}": ["next"],
        f"/orders/{order}/cancel": ["next"],
        f"/orders/{order}/modify": ["next"],
        f"/orders/{order}/modify/preview": [f"qty-{item}", "notify_customer", "next"],
        "/mailbox": ["page"],
    }


def fuzz_query_strings(client, path, names):
    @FUZZ
    @given(query=query_strings(names))
    def fuzz(query):
        assert_no_server_error(client.get(f"{path}?{query}"), f"GET {path}?{query}")

    fuzz()


@pytest.mark.parametrize("role", ["admin", "manager"])
def test_no_page_fails_on_any_query_string(panel, role, subtests):
    client = panel["clients"][role]
    for path, names in get_routes(panel).items():
        with subtests.test(path=path):
            fuzz_query_strings(client, path, names)


# --- POST: every panel form's fields ---------------------------------------------------------

# A form that would go through as it is; the fuzzer replaces, drops and adds fields, so one odd
# value meets otherwise valid ones and reaches the code behind the form's own checks.
CUSTOMER_REQUEST = {"reason": "customer_requested", "notes": "fuzz", "notify_customer": "y",
                    "request_contact": "jane@example.com", "request_channel": "phone",
                    "requested_at": "2026-01-05T10:00", "confirm_in_progress": "y",
                    "scope": "this_instance", "version": "1", "next": "/"}


def post_routes(panel):
    orders, item = panel["orders"], panel["item"]
    return {
        f"/orders/{orders[1]}/cancel": CUSTOMER_REQUEST,
        f"/orders/{orders[3]}/approval-request": {**CUSTOMER_REQUEST, "justification": "why"},
        f"/orders/{orders[0]}/modify": {**CUSTOMER_REQUEST, f"qty-{item}": "1",
                                        "justification": "why", "mode": "approval"},
        "/orders/bulk-cancel": {"order_ids": str(orders[0]), "reason": "inventory_issues",
                                "notes": "fuzz", "notify_customer": "y", "all_matching": "1",
                                "matching_total": "1", "max_order_id": str(max(orders)),
                                "confirmed": "", "next": "/", "q": "T-", "status": "pending",
                                "store": str(panel["store"]), "from": "2020-01-01",
                                "to": "9999-12-31"},
        f"/approvals/{panel['approval']}/reject": {"comment": "no", "next": "/approvals"},
        f"/orders/{orders[5]}/notifications/resend": {"next": "/"},
        f"/orders/{orders[5]}/return-stock": {"next": "/"},
    }


def form_bodies(base):
    """`base` with some fields replaced by anything, some left out, some repeated or added."""
    names = sorted(base)
    return st.tuples(
        st.lists(named_values(names + ["unknown"]), max_size=5),
        st.sets(st.sampled_from(names), max_size=3),
    ).map(lambda changes: "&".join(
        [f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in base.items()
         if name not in changes[1] and name not in dict(changes[0])]
        + [f"{quote(name, safe='')}={value}" for name, value in changes[0]]))


def fuzz_form(client, token, path, base):
    @FUZZ
    @given(fields=form_bodies(base))
    def fuzz(fields):
        body = f"csrf_token={quote(token, safe='')}&{fields}"
        response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
        assert_no_server_error(response, f"POST {path} {body}")

    fuzz()


@pytest.mark.parametrize("role", ["admin", "manager"])
def test_no_form_fails_on_any_field_values(panel, role, subtests):
    client, token = panel["clients"][role], panel["csrf"][role]
    for path, base in post_routes(panel).items():
        with subtests.test(path=path):
            fuzz_form(client, token, path, base)


# --- the cases found, named ------------------------------------------------------------------

def test_paths_with_ids_past_any_column_are_not_found(panel):
    client = panel["clients"]["admin"]
    huge = "99999999999999999999"
    for path in (f"/orders/{huge}", f"/orders/{huge}/cancel", f"/orders/{huge}/modify",
                 f"/bulk-jobs/{huge}", f"/bulk-jobs/{huge}/progress"):
        assert client.get(path).status_code == 404, path
    for path in (f"/approvals/{huge}/approve", f"/orders/{huge}/cancel",
                 f"/orders/{huge}/return-stock"):
        response = client.post(path, data={"csrf_token": panel["csrf"]["admin"]})
        assert response.status_code in (404, 405), (path, response.status_code)


def test_the_fuzzer_reaches_real_pages(panel):
    """Not only redirects and 404s: the routes above answer 200 to a plain request."""
    client = panel["clients"]["admin"]
    for path in get_routes(panel):
        if path != "/audit/compliance.csv":
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
    assert re.search(r"Order", client.get("/").get_data(as_text=True))
