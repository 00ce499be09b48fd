"""The audit log page: filters, pagination, store scope, masked contact details, the streamed CSV
export, chain verification naming the broken row, and that nothing can change an event."""
import csv
import io
import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import JSON, bindparam, event, text

from conftest import ROOT, cancel, csrf_from
from helpers import email_of


def add_events(app, store_id, count, action="test.alpha", actor_id=None, order_id=None,
               after=None):
    """Append `count` real chain events for one store in one transaction."""
    from cancellation.audit import record
    from models import User, db

    with app.app_context():
        actor = db.session.get(User, actor_id) if actor_id else None
        for n in range(count):
            record(actor, action, target_type="test", target_id=n, store_id=store_id,
                   order_id=order_id, after=after if after is not None else {"n": n})
        db.session.commit()


def shown_total(page):
    match = re.search(r'data-testid="result-count">\s*(?:Showing [\d,]+–[\d,]+ of ([\d,]+) events|'
                      r'(No events))', page)
    assert match, page
    return 0 if match.group(2) else int(match.group(1).replace(",", ""))


def rows_on(page):
    return re.findall(r'<tr data-seq="(\d+)" data-action="([^"]+)"', page)


def test_filters_pagination_and_store_scope(app, client, auth, factory):
    store = factory.store()
    other_store = factory.store()
    manager = factory.user("store_manager", stores=[store])
    outsider = factory.user("store_manager", stores=[other_store])
    staff = factory.user("fulfillment", stores=[store])
    product = factory.product()
    order_id = factory.order(store, [(product, 1, 1000)])
    add_events(app, store, 60, action="test.alpha")
    add_events(app, store, 5, action="test.beta", actor_id=staff, order_id=order_id)

    auth(manager)
    page = client.get("/audit/").get_data(as_text=True)
    assert shown_total(page) == 65
    assert len(rows_on(page)) == 50
    seqs = [int(seq) for seq, _ in rows_on(page)]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    assert "Page 1 of 2" in page and 'href="/audit/?page=2" rel="next"' in page
    second = client.get("/audit/?page=2").get_data(as_text=True)
    assert len(rows_on(second)) == 15
    assert "Page 2 of 2" in second
    assert not set(rows_on(page)) & set(rows_on(second))

    by_action = client.get("/audit/?action=test.beta").get_data(as_text=True)
    assert shown_total(by_action) == 5
    assert {action for _, action in rows_on(by_action)} == {"test.beta"}
    by_actor = client.get("/audit/?actor=" + email_of(app, staff).split("@")[0].upper())
    assert shown_total(by_actor.get_data(as_text=True)) == 5
    with app.app_context():
        from models import Order, db
        number = db.session.get(Order, order_id).number
    assert shown_total(client.get(f"/audit/?order={number}").get_data(as_text=True)) == 5
    assert shown_total(client.get(f"/audit/?order={order_id}").get_data(as_text=True)) == 5
    assert shown_total(client.get(f"/audit/?store={store}&action=test.alpha")
                       .get_data(as_text=True)) == 60

    from models import utcnow
    today = utcnow().date()
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)
    assert shown_total(client.get(f"/audit/?from={today}&to={today}")
                       .get_data(as_text=True)) == 65
    assert shown_total(client.get(f"/audit/?from={tomorrow}").get_data(as_text=True)) == 0
    assert shown_total(client.get(f"/audit/?to={yesterday}").get_data(as_text=True)) == 0
    # Garbage in the query string is ignored, never an error.
    assert client.get("/audit/?page=x&from=notadate&store=abc").status_code == 200

    # A manager of another store sees none of these, even when asking for the store by id.
    other = app.test_client()
    auth(outsider, client=other)
    page = other.get(f"/audit/?store={store}").get_data(as_text=True)
    assert not [1 for _, action in rows_on(page) if action in ("test.alpha", "test.beta")]
    csv_text = b"".join(other.get(f"/audit/export.csv?store={store}").response).decode()
    assert "test.alpha" not in csv_text


def test_who_may_open_the_audit_log(app, auth, factory):
    store = factory.store()
    for role, status in (("admin", 200), ("store_manager", 200), ("ops_engineer", 200),
                         ("fulfillment", 403), ("customer_service", 403)):
        client = app.test_client()
        auth(role=role, stores=[store], client=client)
        for path in ("/audit/", "/audit/export.csv", "/audit/verify",
                     f"/audit/compliance.csv?store={store}&date=2024-01-01"):
            assert client.get(path).status_code == status, (role, path)
    assert app.test_client().get("/audit/").status_code == 302  # anonymous: to the login page


def test_contact_details_are_masked_for_roles_without_contact_access(app, auth, factory):
    store = factory.store()
    add_events(app, store, 1, action="test.contact",
               after={"request_contact": "jane.doe@example.com",
                      "notes": "Customer called from 415-555-0134 and wrote from "
                               "jd@example.org"})
    ops = app.test_client()
    auth(role="ops_engineer", client=ops)
    page = ops.get(f"/audit/?store={store}&action=test.contact").get_data(as_text=True)
    exported = b"".join(ops.get(f"/audit/export.csv?store={store}&action=test.contact")
                        .response).decode()
    for text_ in (page, exported):
        assert "jane.doe@example.com" not in text_ and "jd@example.org" not in text_
        assert "415-555-0134" not in text_
        assert "j***@example.com" in text_ and "***-***-0134" in text_
    assert "masked for your role" in page

    manager = app.test_client()
    auth(role="store_manager", stores=[store], client=manager)
    page = manager.get(f"/audit/?store={store}&action=test.contact").get_data(as_text=True)
    assert "jane.doe@example.com" in page and "415-555-0134" in page
    assert "masked for your role" not in page


def test_csv_export_streams_a_large_range_in_batches(app, auth, factory):
    from models import db

    store = factory.store()
    add_events(app, store, 3000, action="test.bulk")
    client = app.test_client()
    auth(role="admin", client=client)

    options = []

    def spy(state):
        if state.is_select:
            options.append(dict(state.execution_options))

    from sqlalchemy.orm import Session
    event.listen(Session, "do_orm_execute", spy)
    try:
        response = client.get(f"/audit/export.csv?store={store}&action=test.bulk")
        assert response.status_code == 200
        assert response.is_streamed  # a generator, not a body built in memory
        assert response.mimetype == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        chunks = [chunk for chunk in response.response]
        response.close()
    finally:
        event.remove(Session, "do_orm_execute", spy)

    assert len(chunks) > 10  # sent as it was read, in pieces
    assert any(o.get("yield_per") for o in options), options  # read in batches from the DB
    rows = list(csv.reader(io.StringIO(b"".join(
        c if isinstance(c, bytes) else c.encode() for c in chunks).decode())))
    assert rows[0][:4] == ["seq", "created_at_utc", "actor", "action"]
    assert len(rows) == 3001
    seqs = [int(row[0]) for row in rows[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3000
    assert {row[3] for row in rows[1:]} == {"test.bulk"}
    assert rows[1][9] == '{"n": 0}' and rows[-1][9] == '{"n": 2999}'
    with app.app_context():
        assert db.session.scalar(text("SELECT COUNT(*) FROM audit_events WHERE store_id = :s"),
                                 {"s": store}) == 3000


def test_csv_cells_cannot_become_spreadsheet_formulas(app, auth, factory):
    store = factory.store()
    add_events(app, store, 1, action="test.formula", after={"notes": "=HYPERLINK(\"x\")"})
    client = app.test_client()
    auth(role="admin", client=client)
    body = b"".join(client.get(f"/audit/export.csv?store={store}&action=test.formula")
                    .response).decode()
    row = list(csv.reader(io.StringIO(body)))[1]
    assert not any(cell.startswith("=") for cell in row)


def test_verify_chain_page_names_the_broken_row(app, client, auth, factory, restore_row):
    from models import AuditEvent, db

    shop = factory.shop(role="store_manager")
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200
    with app.app_context():
        seq = db.session.scalar(db.select(AuditEvent.seq).where(
            AuditEvent.order_id == shop["order_id"], AuditEvent.action == "order.cancelled"))
    auth(shop["user_id"])
    page = client.get("/audit/verify").get_data(as_text=True)
    assert 'data-testid="chain-ok"' in page and "The chain is intact" in page

    restore_row(seq)
    with app.app_context():
        db.session.execute(text("UPDATE audit_events SET after = :after WHERE seq = :seq")
                           .bindparams(bindparam("after", type_=JSON)),
                           {"after": {"status": "pending"}, "seq": seq})
        db.session.commit()
    page = client.get("/audit/verify").get_data(as_text=True)
    assert f'data-broken-seq="{seq}"' in page
    assert f"broken at event #{seq}" in page and "altered" in page
    assert "order.cancelled" in page  # the row itself is shown: it is in the manager's store


def test_audit_events_cannot_be_changed_through_any_route(app):
    from models import AuditChainHead, AuditEvent

    # No admin view of the audit tables.
    admin = app.extensions["cancel_desk_admin"]
    models = {getattr(view, "model", None) for view in admin._views}
    assert AuditEvent not in models and AuditChainHead not in models
    # The audit blueprint only reads.
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("audit."):
            assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule
    # And no code path issues an UPDATE or DELETE on the audit tables (the ORM refuses too:
    # tests/test_audit.py).
    pattern = re.compile(r"\b(update|delete)\(\s*AuditEvent\b|"
                         r"\b(UPDATE|DELETE\s+FROM)\s+audit_events\b", re.IGNORECASE)
    for folder in ("blueprints", "commands", "bench", "cancellation", "tasks", "models"):
        for path in Path(ROOT / folder).rglob("*.py"):
            assert not pattern.search(path.read_text()), f"{path} changes audit events"


def test_audit_page_and_csv_are_not_for_post(app, auth, factory):
    client = app.test_client()
    auth(role="admin", client=client)
    page = client.get("/audit/")
    token = csrf_from(page)
    for path in ("/audit/", "/audit/export.csv", "/audit/verify"):
        assert client.post(path, data={"csrf_token": token}).status_code == 405
