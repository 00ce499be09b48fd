"""Sessions, remember cookies and API tokens end when they should.

Signing out ends the sign-in on the server (a copy of the session or remember cookie taken
before opens nothing); a password, role or active-flag change ends every session, remember
cookie and API token of the user, and reactivating does not revive them; tokens expire, can be
revoked by their holder (DELETE /api/auth/token) or by an admin in /admin, whose list shows
when each was created, last used and expires.
"""
from datetime import timedelta
from http.cookies import SimpleCookie

import pytest

from models import ApiToken, AuditEvent, LoginSession, User, db, utcnow

from conftest import bearer, csrf_from, login
from helpers import email_of, race

PASSWORD = "secret-pass"


def signed_in(app, auth, factory, role="store_manager", remember=False):
    """(user id, a new client signed in through the real form, its Set-Cookie headers)."""
    user = auth(role=role, stores=[factory.store()], client=app.test_client(), password=PASSWORD,
                **({"remember": "y"} if remember else {}))
    return user.user_id, user.client, user.response.headers.getlist("Set-Cookie")


def cookie_named(set_cookies, name):
    for header in set_cookies:
        parsed = SimpleCookie()
        parsed.load(header)
        if name in parsed:
            return parsed[name], header
    return None, None


def browser_with(app, **cookies):
    """A fresh browser holding only these cookies (a stolen copy, say)."""
    client = app.test_client()
    for name, value in cookies.items():
        client.set_cookie(name, value)
    return client


def opens_dashboard(client):
    return client.get("/dashboard").status_code == 200


def test_remember_cookie_is_lax_httponly_and_lasts_fourteen_days(app, auth, factory):
    _user, _client, set_cookies = signed_in(app, auth, factory, remember=True)
    morsel, header = cookie_named(set_cookies, "remember_token")
    assert morsel is not None, set_cookies
    assert "SameSite=Lax" in header and "HttpOnly" in header
    from email.utils import parsedate_to_datetime
    lasts = parsedate_to_datetime(morsel["expires"]).replace(tzinfo=None) - utcnow()
    assert timedelta(days=14, minutes=-1) <= lasts <= timedelta(days=14), header
    import config
    production = config.Production
    assert production.REMEMBER_COOKIE_SECURE and production.SESSION_COOKIE_SECURE
    assert production.REMEMBER_COOKIE_SAMESITE == "Lax"


def test_sign_out_ends_the_session_and_the_remember_cookie(app, auth, factory):
    _user, client, set_cookies = signed_in(app, auth, factory, remember=True)
    remember = cookie_named(set_cookies, "remember_token")[0].value
    session_cookie = client.get_cookie("session").value
    # Both cookies open the panel on their own before signing out.
    assert opens_dashboard(browser_with(app, remember_token=remember))
    assert opens_dashboard(browser_with(app, session=session_cookie))

    response = client.post("/logout", data={"csrf_token": csrf_from(client.get("/dashboard"))})
    assert response.status_code == 302
    cleared, header = cookie_named(response.headers.getlist("Set-Cookie"), "remember_token")
    assert cleared is not None and cleared.value == "", header  # the browser drops it
    assert not opens_dashboard(client)
    # Copies taken before sign-out open nothing any more.
    assert not opens_dashboard(browser_with(app, remember_token=remember))
    assert not opens_dashboard(browser_with(app, session=session_cookie))


@pytest.mark.parametrize("change", ["password", "deactivate", "role"])
def test_a_credential_change_ends_every_session_cookie_and_token(app, auth, factory, change):
    user, client, set_cookies = signed_in(app, auth, factory, remember=True)
    remember = cookie_named(set_cookies, "remember_token")[0].value
    other_browser = app.test_client()
    auth(user, client=other_browser)
    token = factory.token(user)
    assert opens_dashboard(client) and opens_dashboard(other_browser)
    assert client.get("/api/v1/orders", headers=bearer(token)).status_code == 200

    with app.app_context():
        row = db.session.get(User, user)
        if change == "password":
            row.set_password("a-brand-new-password")
        elif change == "deactivate":
            row.active = False
        else:
            row.role = "fulfillment"
        db.session.commit()

    assert not opens_dashboard(client)
    assert not opens_dashboard(other_browser)
    assert not opens_dashboard(browser_with(app, remember_token=remember))
    response = app.test_client().get("/api/v1/orders", headers=bearer(token))
    assert response.status_code == 401

    if change == "deactivate":  # reactivating does not bring the old ones back
        with app.app_context():
            db.session.get(User, user).active = True
            db.session.commit()
        assert not opens_dashboard(browser_with(app, remember_token=remember))
        assert app.test_client().get("/api/v1/orders",
                                     headers=bearer(token)).status_code == 401
        fresh = auth(user, client=app.test_client()).client
        assert opens_dashboard(fresh)


# Flask-Admin's stores field yields raw choice tuples, which WTForms 3.2 deprecates.
@pytest.mark.filterwarnings("ignore:Yielding raw tuples:DeprecationWarning")
def test_a_password_changed_in_admin_ends_the_users_sessions(app, auth, factory):
    user, client, _ = signed_in(app, auth, factory, role="fulfillment")
    admin = auth(role="admin", client=app.test_client()).client
    form = admin.get(f"/admin/users/edit/?id={user}")
    assert form.status_code == 200
    with app.app_context():
        row = db.session.get(User, user)
        data = {"email": row.email, "name": row.name, "role": row.role,
                "stores": [str(s.id) for s in row.stores], "active": "y",
                "new_password": "changed-by-admin-1",
                "csrf_token": csrf_from(admin.get("/dashboard"))}
    response = admin.post(f"/admin/users/edit/?id={user}", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    assert not opens_dashboard(client)
    assert opens_dashboard(admin)  # the admin's own session is untouched


def test_tokens_expire(app, factory):
    user = factory.user("ops_engineer")
    token = factory.token(user)
    assert app.test_client().get("/api/v1/orders", headers=bearer(token)).status_code == 200
    with app.app_context():
        db.session.execute(db.update(ApiToken).where(ApiToken.user_id == user)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    response = app.test_client().get("/api/v1/orders", headers=bearer(token))
    assert response.status_code == 401


def test_issued_tokens_carry_the_configured_expiry(app, factory):
    user = factory.user("ops_engineer")
    response = app.test_client().post("/api/auth/token", json={
        "email": email_of(app, user), "password": PASSWORD})
    assert response.status_code == 200
    from datetime import datetime
    expires = datetime.fromisoformat(response.json["expires_at"].replace("Z", "+00:00"))
    days = (expires.replace(tzinfo=None) - utcnow()).total_seconds() / 86400
    assert app.config["API_TOKEN_TTL_DAYS"] - 0.01 < days <= app.config["API_TOKEN_TTL_DAYS"]


def test_the_holder_revokes_a_token_and_it_stops_working(app, factory):
    user = factory.user("ops_engineer")
    token, other = factory.token(user), factory.token(user)
    client = app.test_client()
    assert client.delete("/api/auth/token", headers=bearer(token)).status_code == 204
    assert client.get("/api/v1/orders", headers=bearer(token)).status_code == 401
    assert client.delete("/api/auth/token", headers=bearer(token)).status_code == 401
    assert client.get("/api/v1/orders", headers=bearer(other)).status_code == 200  # only that one
    with app.app_context():
        events = db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.action == "auth.token_revoked", AuditEvent.actor_id == user)).all()
    assert len(events) == 1


def test_revoking_one_token_twice_at_once_revokes_it_once(app, factory):
    user = factory.user("ops_engineer")
    for _ in range(3):
        token = factory.token(user)
        clients = [app.test_client(), app.test_client()]
        statuses = race(*[(lambda c=c, token=token: c.delete("/api/auth/token",
                                                             headers=bearer(token)))
                          for c in clients])
        codes = sorted(r.status_code for r in statuses)
        # One revokes it; the other either lost the compare-and-set (409) or came after (401).
        assert codes[0] == 204 and codes[1] in (401, 409), codes
        if codes[1] == 409:
            loser = [r for r in statuses if r.status_code == 409][0]
            assert loser.json["error"]["code"] == "token_revoked"
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "auth.token_revoked", AuditEvent.actor_id == user)) == 3


def test_admin_lists_tokens_with_their_use_and_revokes_them(app, auth, factory):
    user = factory.user("ops_engineer")
    token = factory.token(user)
    app.test_client().get("/api/v1/orders", headers=bearer(token))  # marks it used
    admin = auth(role="admin", client=app.test_client()).client
    page = admin.get(f"/admin/tokens/?search={token[:10]}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for heading in ("Name", "Created", "Last used", "Expires", "State"):
        assert heading in html, heading
    assert token[:10] in html and "active" in html and token not in html
    with app.app_context():
        row = db.session.scalar(db.select(ApiToken).where(ApiToken.prefix == token[:10]))
        assert row.last_used_at is not None
        row_id = row.id
    response = admin.post("/admin/tokens/action/", data={
        "action": "revoke", "rowid": [str(row_id)],
        "csrf_token": csrf_from(admin.get("/dashboard"))})
    assert response.status_code == 302
    assert app.test_client().get("/api/v1/orders", headers=bearer(token)).status_code == 401
    assert "revoked" in admin.get(f"/admin/tokens/?search={token[:10]}").get_data(as_text=True)


def test_admin_signs_a_session_out(app, auth, factory):
    user, client, _ = signed_in(app, auth, factory)
    admin = auth(role="admin", client=app.test_client()).client
    page = admin.get("/admin/sessions/")
    assert page.status_code == 200
    with app.app_context():
        row_id = db.session.scalar(db.select(LoginSession.id).where(
            LoginSession.user_id == user, LoginSession.ended_at.is_(None)))
    response = admin.post("/admin/sessions/action/", data={
        "action": "end", "rowid": [str(row_id)],
        "csrf_token": csrf_from(admin.get("/dashboard"))})
    assert response.status_code == 302, response.get_data(as_text=True)[:3000]
    assert not opens_dashboard(client)
    assert opens_dashboard(admin)


@pytest.mark.filterwarnings("ignore:Yielding raw tuples:DeprecationWarning")
def test_admins_changing_their_own_password_stay_signed_in_here_only(app, factory):
    admin_id = factory.user("admin")
    email = email_of(app, admin_id)
    here, elsewhere = app.test_client(), app.test_client()
    login(here, email)
    login(elsewhere, email)
    with app.app_context():
        row = db.session.get(User, admin_id)
        data = {"email": row.email, "name": row.name, "role": row.role, "active": "y",
                "new_password": "my-own-new-password", "csrf_token": csrf_from(
                    here.get("/dashboard"))}
    response = here.post(f"/admin/users/edit/?id={admin_id}", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    assert opens_dashboard(here)
    assert not opens_dashboard(elsewhere)


def test_the_api_ignores_the_remember_cookie(app, auth, factory):
    """The API is CSRF-exempt because only bearer tokens sign it in: a browser's remember
    cookie opens nothing there, and never wins over the token that is sent."""
    user, _client, set_cookies = signed_in(app, auth, factory, remember=True)
    remember = cookie_named(set_cookies, "remember_token")[0].value
    browser = browser_with(app, remember_token=remember)
    response = browser.get("/api/v1/orders")
    assert response.status_code == 401
    admin = factory.user("admin")
    response = browser.get(f"/api/v2/users/{admin}/roles",
                           headers=bearer(factory.token(admin)))
    assert response.status_code == 200 and response.json["roles"] == ["admin"]


@pytest.mark.parametrize("value", ["abc|\u00e9\u00e9", "\u00e9", "1|" + "x" * 4000, "|", "\x7f"])
def test_a_planted_remember_cookie_is_no_sign_in_and_no_error(app, value):
    browser = browser_with(app, remember_token=value)
    assert browser.get("/login").status_code == 200
    assert browser.get("/dashboard").status_code == 302
    assert browser.get("/api/v1/orders").status_code == 401


def test_a_credential_change_moves_the_generation_once_per_change(app, factory):
    user = factory.user("fulfillment")
    with app.app_context():
        before = db.session.get(User, user).auth_generation
    with app.app_context():
        row = db.session.get(User, user)
        row.set_password("first-new-password")
        db.session.commit()
        row.role = "customer_service"
        db.session.commit()
        assert db.session.get(User, user).auth_generation == before + 2


def test_sign_ins_ended_a_month_ago_are_purged_by_the_worker(app, auth, factory, worker):
    from conftest import wait_for

    user, client, _ = signed_in(app, auth, factory)
    old = utcnow() - timedelta(days=31)
    with app.app_context():
        live = db.session.scalar(db.select(LoginSession.id).where(LoginSession.user_id == user))
        stale = LoginSession(user_id=user, token_hash="f" * 64, generation=0, created_at=old,
                             expires_at=old + timedelta(hours=12))
        db.session.add(stale)
        db.session.commit()
        stale_id = stale.id
    app.extensions["celery"].send_task("cancel_desk.purge_idempotency_keys")

    def gone():
        with app.app_context():
            return db.session.get(LoginSession, stale_id) is None

    wait_for(gone, message="the month-old sign-in purged")
    with app.app_context():
        assert db.session.get(LoginSession, live) is not None
    assert opens_dashboard(client)
