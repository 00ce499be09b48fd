"""The orders list's search (`?q=`), in the panel and API v1 alike (cancellation.orders): a part
of the order number or of the customer's name, ignoring case; for roles that see customer contact
details also a part of the e-mail, and a phone number typed with or without punctuation."""
import html
import random
import re

import pytest
from sqlalchemy import text

from models import Customer, User, db

from conftest import bearer, login


def sign_in(app, client, user_id):
    with app.app_context():
        email = db.session.get(User, user_id).email
    assert login(client, email).status_code == 302


def page_of(client, q, **args):
    return html.unescape(client.get("/", query_string={"q": q, **args}).get_data(as_text=True))


def api_ids(client, token, q):
    response = client.get("/api/v1/orders", query_string={"q": q}, headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return {item["id"] for item in response.json["items"]}, response.json["total"]


@pytest.fixture
def searchable(app, factory):
    """Two stores; in the first a customer with a distinctive name, e-mail and phone and their
    order, plus an order of someone else; in the second an order of the same customer."""
    digits = "".join(random.choice("23456789") for _ in range(7))
    tag = f"{random.randrange(10**8):08d}"
    store, other = factory.store(), factory.store()
    product = factory.product()
    factory.stock(store, product)
    factory.stock(other, product)
    customer = factory.customer(email=f"Quetzal.{tag}@Example.org",
                                phone=f"+1 (308) {digits[:3]}-{digits[3:]}")
    with app.app_context():
        db.session.get(Customer, customer).name = f"Ottilie Quetzalcoatl {tag}"
        db.session.commit()
    theirs = factory.order(store, [(product, 1, 1000)], customer_id=customer)
    someone_else = factory.order(store, [(product, 1, 1000)], customer_id=factory.customer())
    elsewhere = factory.order(other, [(product, 1, 1000)], customer_id=customer)
    with app.app_context():
        from models import Order

        numbers = {oid: db.session.get(Order, oid).number
                   for oid in (theirs, someone_else, elsewhere)}
    return {"store": store, "other": other, "customer": customer, "tag": tag,
            "digits": f"308{digits}", "theirs": theirs, "someone_else": someone_else,
            "elsewhere": elsewhere, "numbers": numbers}


def test_a_manager_finds_orders_by_number_name_email_and_phone(app, client, factory,
                                                               searchable):
    s = searchable
    sign_in(app, client, factory.user("store_manager", stores=[s["store"]]))
    mine, theirs, elsewhere = (s["numbers"][s[k]] for k in ("theirs", "someone_else",
                                                            "elsewhere"))
    local = s["digits"][3:]
    for q in (f"quetzalcoatl {s['tag']}", f"OTTILIE QUETZALCOATL {s['tag']}",  # name, any case
              f"quetzal.{s['tag']}@example", f"QUETZAL.{s['tag']}@EXAMPLE.ORG",  # e-mail
              f"(308) {local[:3]}-{local[3:]}", f"308-{local[:3]}-{local[3:]}",  # phone, typed
              f"308{local}", f"+1 308 {local}", f"1308{local}", local[-4:] + " ",  # or digits
              ):
        page = page_of(client, q)
        assert mine in page, q
        assert elsewhere not in page, q  # the other store: never
        assert theirs not in page or q.strip() in theirs, q  # (its number may hold the digits)
    # A part of the order number, any case; the other order of the store is not listed.
    page = page_of(client, mine[2:].lower())
    assert mine in page and theirs not in page
    # The placeholder says what the box searches.
    assert 'placeholder="Order number, customer name, e-mail or phone"' in page


def test_search_wildcards_are_literal_and_short_digit_strings_are_no_phone(app, client,
                                                                          factory, searchable):
    s = searchable
    sign_in(app, client, factory.user("store_manager", stores=[s["store"]]))
    mine = s["numbers"][s["theirs"]]
    for q in ("%", "_", "%%%", "T_", "quetzal%coatl"):
        assert mine not in page_of(client, q), q
    # Three digits are not a phone number (they would match half the customers): only numbers
    # and names are searched for them.
    short = s["digits"][-3:]
    assert short in mine or mine not in page_of(client, short)


def test_roles_that_may_not_see_contact_details_do_not_search_them(app, client, factory,
                                                                  searchable):
    s = searchable
    sign_in(app, client, factory.user("fulfillment", stores=[s["store"]]))
    mine = s["numbers"][s["theirs"]]
    assert mine in page_of(client, f"quetzalcoatl {s['tag']}")  # the name, as before
    for q in (f"quetzal.{s['tag']}@example.org", s["digits"], f"+1 (308) {s['digits'][3:]}"):
        assert mine not in page_of(client, q), q
    assert 'placeholder="Order number or customer name"' in page_of(client, "x")


def test_the_api_searches_like_the_panel(app, client, factory, searchable):
    s = searchable
    manager = factory.token(factory.user("store_manager", stores=[s["store"]]))
    ops = factory.token(factory.user("ops_engineer"))  # every store, no contact details
    assert api_ids(client, manager, f"quetzal.{s['tag']}@") == ({s["theirs"]}, 1)
    assert api_ids(client, manager, f"(308) {s['digits'][3:6]} {s['digits'][6:]}") == \
        ({s["theirs"]}, 1)
    assert api_ids(client, ops, f"Quetzalcoatl {s['tag']}") == \
        ({s["theirs"], s["elsewhere"]}, 2)
    assert api_ids(client, ops, f"quetzal.{s['tag']}@") == (set(), 0)
    assert api_ids(client, ops, s["digits"]) == (set(), 0)


def test_the_select_all_count_is_the_search_s(app, client, factory, searchable):
    """"Select all N matching" counts the same orders the search lists, and freezes the newest
    of them."""
    s = searchable
    sign_in(app, client, factory.user("store_manager", stores=[s["store"]]))
    page = page_of(client, s["digits"])
    assert "Showing 1–1 of 1" in page
    assert 'data-matching-total="1"' in page
    assert f'name="max_order_id" type="hidden" value="{s["theirs"]}"' in page, \
        re.findall(r'<input[^>]*max_order_id[^>]*>', page)


def test_the_search_can_use_the_trigram_indexes(app):
    """On PostgreSQL, with sequential scans priced out, the search's plan reads the trigram
    indexes and no table from end to end: the query's shape lets the indexes serve it (an
    IN (subquery) filter, or lower(number), would force a full scan of the orders)."""
    from types import SimpleNamespace

    from cancellation.orders import matching_orders

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("trigram indexes are PostgreSQL's")
        admin = User(email="plan@test.example", name="Plan", role="admin", active=True)
        query = matching_orders(admin, SimpleNamespace(q="(555) 010-2000"))
        compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
        with db.engine.begin() as connection:
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(row[0] for row in connection.exec_driver_sql(
                "EXPLAIN " + str(compiled)))  # its % doubled, as the driver wants them
    assert "Seq Scan" not in plan, plan
    for index in ("ix_orders_number_trgm", "ix_customers_name_trgm", "ix_customers_email_trgm",
                  "ix_customers_phone_digits_trgm", "ix_orders_customer_id"):
        assert index in plan, plan


@pytest.mark.parametrize("few", [500, 3])
def test_a_search_pages_and_counts_alike_whether_its_matches_are_few_or_many(
        app, client, factory, searchable, monkeypatch, few):
    """Up to cancellation.orders.FEW matches are counted and paged from one read of their ids;
    more are counted by the database: the pages are the same either way."""
    import cancellation.orders

    s = searchable
    monkeypatch.setattr(cancellation.orders, "FEW", few)
    product = factory.product()
    factory.stock(s["store"], product)
    for _ in range(4):
        factory.order(s["store"], [(product, 1, 1000)], customer_id=s["customer"])
    with app.app_context():
        from models import Order

        newest_first = [o.number for o in db.session.scalars(
            db.select(Order).where(Order.customer_id == s["customer"],
                                   Order.store_id == s["store"])
            .order_by(Order.placed_at.desc(), Order.id.desc()))]
    assert len(newest_first) == 5
    manager = factory.user("store_manager", stores=[s["store"]])
    sign_in(app, client, manager)
    monkeypatch.setitem(app.config, "ORDERS_PER_PAGE", 2)
    listed = []
    for number in (1, 2, 3):
        page = page_of(client, s["digits"], page=number)
        assert "of 5" in page
        listed += [n for n in newest_first if n in page]
    assert listed == newest_first  # every order once, newest first
    assert "Page 3 of 3" in page_of(client, s["digits"], page=9)  # past the end: the last page

    token = factory.token(manager)
    pages = [client.get("/api/v1/orders", query_string={"q": s["digits"], "page": n,
                                                        "per_page": 2},
                        headers=bearer(token)).json for n in (1, 2, 3, 4)]
    assert [p["total"] for p in pages] == [5, 5, 5, 5]
    assert [[o["number"] for o in p["items"]] for p in pages] == \
        [newest_first[0:2], newest_first[2:4], newest_first[4:], []]


def test_select_all_of_more_orders_than_a_job_takes_is_refused_for_its_size(
        app, client, factory, searchable, monkeypatch):
    """Beyond BULK_MAX_ORDERS matches the list freezes "select all" at the newest order of all
    (cheaper than the newest match, and the selection is refused for its size either way)."""
    from models import BulkJob, Order

    s = searchable
    manager = factory.user("store_manager", stores=[s["store"]])
    sign_in(app, client, manager)
    monkeypatch.setitem(app.config, "BULK_MAX_ORDERS", 1)
    listing = client.get("/", query_string={"status": "pending"})
    page = listing.get_data(as_text=True)
    assert 'data-matching-total="2"' in page
    with app.app_context():
        newest_of_all = db.session.scalar(db.select(db.func.max(Order.id)))
        jobs = db.session.scalar(db.select(db.func.count(BulkJob.id)))
    frozen = re.search(r'id="bulk-max_order_id" name="max_order_id" type="hidden" '
                       r'value="([^"]*)"', page).group(1)
    assert int(frozen) == newest_of_all
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post("/orders/bulk-cancel", data={
        "csrf_token": token, "all_matching": "1", "status": "pending", "matching_total": "2",
        "max_order_id": frozen, "reason": "inventory_issues", "confirmed": "y", "next": "/"})
    assert response.status_code == 302
    flashed = html.unescape(client.get(response.headers["Location"]).get_data(as_text=True))
    assert "2 orders match these filters and a bulk job takes at most 1" in flashed
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(BulkJob.id))) == jobs


def test_an_unfiltered_list_counts_every_order(app, client, factory, searchable):
    """No filter and no store scope (an admin): the count is of the whole table."""
    from models import Order

    admin = factory.user("admin")
    token = factory.token(admin)
    with app.app_context():
        every = db.session.scalar(db.select(db.func.count(Order.id)))
    assert client.get("/api/v1/orders", headers=bearer(token)).json["total"] == every
    sign_in(app, client, admin)
    assert f"of {every:,}" in page_of(client, "")
