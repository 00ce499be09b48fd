"""Sign-in protection: attempts counted before the password is checked (so concurrent guesses
cannot get past the limits), exponential delays per account and address, lockouts of
unrecognised devices that never lock the real user out of a known device, the same time for
unknown e-mails, audit without the password; and `next` redirects never leave the site."""
import itertools
import re
import time

import pytest

from conftest import csrf_from
from helpers import email_of, race

ADDRESSES = (f"10.77.{n // 250}.{n % 250 + 1}" for n in itertools.count())


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
    from blueprints.auth import signin_throttle

    with app.test_request_context():
        throttle = signin_throttle()
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


def known_device(app, factory, browser_from, password):
    """A user who signed in once from a browser (which is now a known device of theirs),
    and signed out again; returns (user id, e-mail, that browser)."""
    user = factory.user("store_manager", stores=[factory.store()], password=password)
    email = email_of(app, user)
    client, _ = browser_from()
    assert attempt(client, email, password).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/dashboard"))})
    assert client.get("/dashboard").status_code == 302
    return user, email, client


def test_five_failures_lock_unrecognised_devices_out_and_the_password_is_not_checked(
        app, factory, browser_from, monkeypatch):
    user, email, own_till = known_device(app, factory, browser_from, "right-password-1")
    for _ in range(5):  # five strangers, one guess each
        stranger, _ = browser_from()
        assert attempt(stranger, email, "wrong-password-x").status_code == 401

    from models import User
    checked = []
    original = User.check_password
    monkeypatch.setattr(User, "check_password",
                        lambda self, password: checked.append(1) or original(self, password))
    newcomer, _ = browser_from()
    response = attempt(newcomer, email, "right-password-1")
    assert response.status_code == 429
    assert checked == []  # locked: the password was not even looked at
    page = response.get_data(as_text=True)
    assert "Too many failed sign-in attempts for this account from unrecognised devices" in page
    assert re.search(r"paused for 1[45] minutes", page)
    assert "A device you have signed in on before can still sign in" in page
    assert 0 < int(response.headers["Retry-After"]) <= 900
    assert newcomer.get("/dashboard").status_code == 302  # not signed in

    # The strangers did not lock the real user out: their own till still signs in.
    response = attempt(own_till, email, "right-password-1")
    assert response.status_code == 302 and checked == [1]
    assert own_till.get("/dashboard").status_code == 200
    # Another account from a stranger's address may sign in.
    other = factory.user("fulfillment", stores=[factory.store()])
    assert attempt(newcomer, email_of(app, other), "secret-pass").status_code == 302

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


def test_guesses_from_one_place_wait_twice_as_long_each_time(app, factory, browser_from):
    """After three failures from one address on one account, each try waits twice as long as
    the one before: the attacker is slowed down, nobody is locked out."""
    _user, email, client = known_device(app, factory, browser_from, "right-password-4")
    for _ in range(4):
        assert attempt(client, email, "nope-nope-nope").status_code == 401
    response = attempt(client, email, "right-password-4")  # too soon after the fourth
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert "Wait 1 second before the next try" in response.get_data(as_text=True)
    time.sleep(1.1)
    assert attempt(client, email, "nope-nope-nope").status_code == 401
    response = attempt(client, email, "right-password-4")
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    time.sleep(2.1)
    assert attempt(client, email, "right-password-4").status_code == 302


def test_the_real_users_sign_in_does_not_hand_strangers_more_guesses(
        app, factory, browser_from):
    """A success takes back its own attempt only: strangers' failures on the account still
    count, so the user signing in again and again buys an attacker no fresh guesses."""
    user, email, own_till = known_device(app, factory, browser_from, "right-password-2")
    for _ in range(4):
        stranger, _ = browser_from()
        assert attempt(stranger, email, "nope-nope-nope").status_code == 401
    assert attempt(own_till, email, "right-password-2").status_code == 302
    own_till.post("/logout", data={"csrf_token": csrf_from(own_till.get("/dashboard"))})
    stranger, _ = browser_from()
    assert attempt(stranger, email, "nope-nope-nope").status_code == 401  # the fifth
    newcomer, _ = browser_from()
    assert attempt(newcomer, email, "right-password-2").status_code == 429
    assert attempt(own_till, email, "right-password-2").status_code == 302


def test_guesses_at_the_users_address_never_delay_their_known_device(
        app, factory, browser_from):
    _user, email, own_till = known_device(app, factory, browser_from, "right-password-5")
    neighbour = app.test_client()  # same shop router, same address
    neighbour.environ_base["REMOTE_ADDR"] = own_till.environ_base["REMOTE_ADDR"]
    for _ in range(4):
        neighbour.post("/api/auth/token", json={"email": email, "password": "guess-guess"})
    assert attempt(neighbour, email, "right-password-5").status_code == 429  # delayed
    assert attempt(own_till, email, "right-password-5").status_code == 302


def test_a_password_reset_makes_every_device_a_stranger_again(app, factory, browser_from):
    from models import User, db

    user, email, own_till = known_device(app, factory, browser_from, "right-password-6")
    with app.app_context():
        db.session.get(User, user).set_password("reset-password-6")
        db.session.commit()
    for _ in range(5):
        stranger, _ = browser_from()
        assert attempt(stranger, email, "nope-nope-nope").status_code == 401
    # The browser that knew the old password is no longer a known device.
    assert attempt(own_till, email, "reset-password-6").status_code == 429


def test_twenty_failures_from_one_address_pause_unrecognised_devices_there(
        app, factory, browser_from):
    _user, email, own_till = known_device(app, factory, browser_from, "right-password-3")
    address = own_till.environ_base["REMOTE_ADDR"]
    stuffer = app.test_client()
    stuffer.environ_base["REMOTE_ADDR"] = address  # behind the same shop router
    for n in range(20):  # many accounts, a guess each: what credential stuffing looks like
        assert attempt(stuffer, f"nobody-{n}@test.example", "guess").status_code == 401
    response = attempt(stuffer, email, "right-password-3")
    assert response.status_code == 429
    assert "Too many failed sign-in attempts from your network address" \
        in response.get_data(as_text=True)
    # The user's own till behind the same address is a known device: not locked out.
    assert attempt(own_till, email, "right-password-3").status_code == 302
    other_place, _ = browser_from()
    assert attempt(other_place, email, "right-password-3").status_code == 302


def test_concurrent_guesses_check_no_more_passwords_than_the_limit(
        app, factory, browser_from, monkeypatch):
    """30 wrong guesses at once, from one address and then from 30: the attempts are counted
    before the passwords are checked, so at most the limit (5) are checked, every checked one
    is audited, and none answers 500."""
    from models import User

    checked = []
    original = User.check_password
    monkeypatch.setattr(User, "check_password",
                        lambda self, password: checked.append(1) or original(self, password))
    for spread in (False, True):
        user = factory.user("store_manager", stores=[factory.store()], password="right-pw-77")
        email = email_of(app, user)
        clients = []
        for _ in range(30):
            client, address = browser_from() if spread or not clients else (
                app.test_client(), clients[0][1])
            client.environ_base["REMOTE_ADDR"] = address
            clients.append((client, address, csrf_from(client.get("/login"))))
        checked.clear()

        def guess(client, token, email=email):
            return lambda: client.post("/login", data={
                "email": email, "password": "wrong!", "csrf_token": token}).status_code

        statuses = race(*[guess(c, t) for c, _a, t in clients])
        assert sorted(set(statuses)) == [401, 429], statuses
        assert len(checked) <= 5, (spread, len(checked))
        assert statuses.count(401) == len(checked)
        assert len(failed_events(app, user)) == len(checked)  # none went unaudited


def test_an_unknown_e_mail_takes_as_long_as_a_wrong_password(app, factory, browser_from):
    """No user enumeration by timing: an unknown e-mail is answered after a password hash
    check like a real account's (8 ms against 139 ms before)."""
    store = factory.store()

    def median_seconds(existing):
        times = []
        for n in range(5):
            client, _ = browser_from()
            page = client.get("/login")
            email = (email_of(app, factory.user("fulfillment", stores=[store])) if existing
                     else f"nobody-{n}-{time.monotonic_ns()}@test.example")
            data = {"email": email, "password": "wrong-password",
                    "csrf_token": csrf_from(page)}
            started = time.perf_counter()
            assert client.post("/login", data=data).status_code == 401
            times.append(time.perf_counter() - started)
        return sorted(times)[2]

    median_seconds(False)  # warm up (the dummy hash is made on first use)
    known, unknown = median_seconds(True), median_seconds(False)
    assert unknown > 0.6 * known, (known, unknown)
    assert unknown < 1.6 * known + 0.05, (known, unknown)


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
    response = attempt(client, email_of(app, user), "secret-pass",
                       next_="/orders%3Fstatus%3Dpending")
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
    for _ in range(3):
        client, _ = browser_from()
        response = client.post("/api/auth/token",
                               json={"email": email, "password": "wrong-password-y"})
        assert response.status_code == 401
        assert response.json["error"]["code"] == "invalid_credentials"
    for _ in range(2):
        client, _ = browser_from()
        assert attempt(client, email, "wrong-password-y").status_code == 401
    client, _ = browser_from()

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


def test_concurrent_audited_writes_are_all_recorded_and_the_chain_holds(app, browser_from):
    """24 failed sign-ins at once (each its own account and address, so none is throttled):
    every one answers 401 and is audited, and the hash chain verifies — on SQLite, where the
    chain head's FOR UPDATE is a no-op, as on PostgreSQL."""
    from cancellation.audit import verify_chain
    from models import AuditEvent, db

    clients = []
    for _ in range(24):
        client, address = browser_from()
        clients.append((client, address, csrf_from(client.get("/login"))))
    def guess(client, token, n):
        return lambda: client.post("/login", data={
            "email": f"ghost-{n}-{time.monotonic_ns()}@test.example", "password": "x",
            "csrf_token": token}).status_code

    statuses = race(*[guess(c, t, n) for n, (c, _a, t) in enumerate(clients)])
    assert statuses == [401] * 24, statuses
    with app.app_context():
        audited = db.session.scalar(db.select(db.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "auth.login_failed",
            AuditEvent.ip.in_([a for _c, a, _t in clients])))
        assert audited == 24
        assert verify_chain().ok
