"""Sign-in protection: failed logins throttled per account and per address (429, clear message,
password not even checked while locked), reset on success, audited without the password; and
`next` redirects never leave the site."""
import itertools
import re

import pytest

from conftest import csrf_from

ADDRESSES = (f"10.77.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def email_of(app, user_id):
    from models import User, db

    with app.app_context():
        return db.session.get(User, user_id).email


@pytest.fixture
def browser_from(app):
    """A test client whose requests come from a fresh address; its counters are removed after."""
    used = []

    def make():
        address = next(ADDRESSES)
        used.append(address)
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return client, address

    yield make
    from blueprints.auth import login_throttle

    with app.test_request_context():
        throttle = login_throttle()
        for address in used:
            throttle.clear(address=address)


def attempt(client, email, password, next_=None):
    page = client.get("/login")
    url = "/login" + (f"?next={next_}" if next_ is not None else "")
    return client.post(url, data={"email": email, "password": password,
                                  "csrf_token": csrf_from(page)})


def failed_events(app, user_id):
    from models import AuditEvent, db

    with app.app_context():
        return db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.action == "auth.login_failed",
            AuditEvent.target_id == str(user_id))).all()


def test_five_failures_lock_the_account_and_the_password_is_not_checked(
        app, factory, browser_from, monkeypatch):
    user = factory.user("store_manager", stores=[factory.store()], password="right-password-1")
    email = email_of(app, user)
    client, _ = browser_from()
    for _ in range(5):
        response = attempt(client, email, "wrong-password-x")
        assert response.status_code == 401

    from models import User
    checked = []
    original = User.check_password
    monkeypatch.setattr(User, "check_password",
                        lambda self, password: checked.append(1) or original(self, password))
    response = attempt(client, email, "right-password-1")
    assert response.status_code == 429
    assert checked == []  # locked: the password was not even looked at
    page = response.get_data(as_text=True)
    assert "Too many failed sign-in attempts for this account" in page
    assert re.search(r"paused for 1[45] minutes", page)
    assert 0 < int(response.headers["Retry-After"]) <= 900
    assert client.get("/dashboard").status_code == 302  # not signed in

    # The lock is per account: from another address the account is locked all the same,
    # while another account from the same address may sign in.
    elsewhere, _ = browser_from()
    assert attempt(elsewhere, email, "right-password-1").status_code == 429
    other = factory.user("fulfillment", stores=[factory.store()])
    assert attempt(client, email_of(app, other), "secret-pass").status_code == 302

    # Audited, without the password.
    events = failed_events(app, user)
    assert len(events) == 5
    for event in events:
        assert event.after == {"email": email, "reason": "wrong_password"}
        assert "wrong-password-x" not in repr((event.before, event.after, event.actor_label))
        assert event.ip.startswith("10.77.")
    from models import AuditEvent, db
    with app.app_context():
        locked = db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.action == "auth.login_locked",
            AuditEvent.target_id == str(user))).all()
    assert [e.after["scope"] for e in locked] == ["account"]

    from blueprints.auth import login_throttle
    with app.test_request_context():
        login_throttle().clear(email=email)


def test_a_success_resets_the_account_counter(app, factory, browser_from):
    user = factory.user("store_manager", stores=[factory.store()], password="right-password-2")
    email = email_of(app, user)
    client, _ = browser_from()
    for _ in range(4):
        assert attempt(client, email, "nope-nope-nope").status_code == 401
    assert attempt(client, email, "right-password-2").status_code == 302
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/dashboard"))})
    for _ in range(4):  # four more would have been nine without the reset
        assert attempt(client, email, "nope-nope-nope").status_code == 401
    assert attempt(client, email, "right-password-2").status_code == 302


def test_twenty_failures_from_one_address_lock_that_address(app, factory, browser_from):
    user = factory.user("store_manager", stores=[factory.store()], password="right-password-3")
    client, _ = browser_from()
    for n in range(20):  # many accounts, a few guesses each: what credential stuffing looks like
        assert attempt(client, f"nobody-{n}@test.example", "guess").status_code == 401
    response = attempt(client, email_of(app, user), "right-password-3")
    assert response.status_code == 429
    assert "Too many failed sign-in attempts from your network address" \
        in response.get_data(as_text=True)
    other_place, _ = browser_from()
    assert attempt(other_place, email_of(app, user), "right-password-3").status_code == 302


def test_unknown_accounts_are_audited_without_what_was_typed(app, factory, browser_from):
    from models import AuditEvent, db

    client, address = browser_from()
    assert attempt(client, "MyS3cretPassw0rd", "x").status_code == 401
    with app.app_context():
        event = db.session.scalar(db.select(AuditEvent).where(
            AuditEvent.action == "auth.login_failed", AuditEvent.ip == address))
    assert event.after == {"email": "***", "reason": "unknown_account"}


@pytest.mark.parametrize("target", [
    "//evil.example/steal", "https://evil.example/", "http:evil.example", "/\\evil.example",
    "\\\\evil.example", "/\t/evil.example", "/\n/evil.example", "javascript:alert(1)",
    "%2F%2Fevil.example", " //evil.example", "ftp://evil.example", "https:/\\evil.example",
])
def test_next_never_leaves_the_site(app, factory, browser_from, target):
    from urllib.parse import quote, urlsplit

    user = factory.user("fulfillment", stores=[factory.store()])
    client, _ = browser_from()
    response = attempt(client, email_of(app, user), "secret-pass", next_=quote(target, safe=""))
    assert response.status_code == 302
    location = response.headers["Location"]
    # As a browser reads it: tabs and newlines dropped, backslashes as slashes.
    seen = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    parts = urlsplit(seen)
    assert not parts.netloc and not parts.scheme and not seen.startswith("//"), location
    assert location == "/dashboard"


def test_next_within_the_site_is_kept(app, factory, browser_from):
    user = factory.user("fulfillment", stores=[factory.store()])
    client, _ = browser_from()
    response = attempt(client, email_of(app, user), "secret-pass", next_="/orders%3Fstatus%3Dpending")
    assert response.headers["Location"] == "/orders?status=pending"
    # Already signed in: /login?next=... redirects the same way.
    assert client.get("/login?next=//evil.example").headers["Location"] == "/dashboard"
    assert client.get("/login?next=/audit/").headers["Location"] == "/audit/"


def test_safe_next_directly(app):
    from blueprints.auth import safe_next

    with app.test_request_context():
        assert safe_next(None) == "/dashboard"
        assert safe_next("") == "/dashboard"
        assert safe_next("/orders/5?next=/x") == "/orders/5?next=/x"
        for bad in ("//x.example", "https://x.example", "/\\x.example", "/\t/x.example",
                    "x.example", "/\x7f/x"):
            assert safe_next(bad) == "/dashboard", bad


def test_the_token_endpoint_counts_against_the_same_lock(app, factory, browser_from):
    """Guessing through POST /api/auth/token is throttled like the sign-in form, and the two
    share one count: API failures lock the panel and the other way round."""
    user = factory.user("ops_engineer", password="right-password-2")
    email = email_of(app, user)
    client, _ = browser_from()
    for _ in range(3):
        response = client.post("/api/auth/token",
                               json={"email": email, "password": "wrong-password-y"})
        assert response.status_code == 401
        assert response.json["error"]["code"] == "invalid_credentials"
    for _ in range(2):
        assert attempt(client, email, "wrong-password-y").status_code == 401

    response = client.post("/api/auth/token", json={"email": email,
                                                    "password": "right-password-2"})
    assert response.status_code == 429
    assert response.json["error"]["code"] == "rate_limited"
    assert "token" not in response.json
    assert 0 < int(response.headers["Retry-After"]) <= 900
    assert attempt(client, email, "right-password-2").status_code == 429

    from models import AuditEvent, db

    with app.app_context():
        sources = {event.actor_label for event in db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.action == "auth.login_failed", AuditEvent.target_id == str(user)))}
    assert sources == {"api", "panel"}
