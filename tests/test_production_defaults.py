"""Production-safe defaults: proxies trusted only when configured, security and cache headers,
bounded request ids, store time zones without a system zone database."""
import os
import re
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT, bearer, login
from helpers import email_of

FORWARDED = "203.0.113.77"


@pytest.fixture
def build_app(app, database_url, redis_url):
    """Another app on the session's database and Redis, with some settings changed."""
    from app import create_app

    def build(env="testing", **overrides):
        return create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_url,
                           **overrides}, env=env)

    yield build
    app.extensions["celery"].set_default()  # the session's Celery app stays the default


def _cancel_and_read_audit_ip(flask_app, factory, **headers):
    """Cancel an order through API v1 from 127.0.0.1 with `headers`; the audit event's ip."""
    from models import AuditEvent, db

    shop = factory.shop(role="admin")
    response = flask_app.test_client().put(
        f"/api/v1/orders/{shop['order_id']}/status",
        json={"status": "cancelled", "reason": "duplicate_order"},
        headers=bearer(shop["token"], **headers),
        environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200, response.get_data(as_text=True)
    with flask_app.app_context():
        return db.session.scalar(db.select(AuditEvent.ip).where(
            AuditEvent.order_id == shop["order_id"], AuditEvent.action == "order.cancelled"))


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted(app, factory):
    assert app.config["TRUSTED_PROXIES"] == 0
    ip = _cancel_and_read_audit_ip(app, factory, **{"X-Forwarded-For": FORWARDED})
    assert ip == "127.0.0.1"


def test_forwarded_for_is_the_client_behind_one_trusted_proxy(build_app, factory):
    behind_proxy = build_app(TRUSTED_PROXIES=1)
    # A client may send its own X-Forwarded-For; the proxy appends the address it saw. Only the
    # last hop, the one the trusted proxy wrote, is believed.
    ip = _cancel_and_read_audit_ip(behind_proxy, factory,
                                   **{"X-Forwarded-For": f"10.9.9.9, {FORWARDED}"})
    assert ip == FORWARDED


def test_trusted_proxies_comes_from_the_environment(monkeypatch):
    import config

    assert config.load("testing")["TRUSTED_PROXIES"] == 0
    monkeypatch.setenv("TRUSTED_PROXIES", "2")
    assert config.load("testing")["TRUSTED_PROXIES"] == 2


def test_login_throttle_counts_each_client_behind_the_proxy(build_app, factory):
    """Behind a proxy, one client's wrong passwords must not lock out everyone else."""
    behind_proxy = build_app(TRUSTED_PROXIES=1, LOGIN_MAX_FAILURES_PER_IP=2,
                             LOGIN_MAX_FAILURES_PER_ACCOUNT=100)
    from blueprints.auth import signin_throttle

    guesser, colleague = "198.51.100.21", "198.51.100.22"
    user_id = factory.user("customer_service")
    email = email_of(behind_proxy, user_id)
    try:
        for _ in range(3):
            client = behind_proxy.test_client()
            client.environ_base.update(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=guesser)
            login(client, f"nobody-{_}@test.example", "wrong-password")
        colleague_client = behind_proxy.test_client()
        colleague_client.environ_base.update(REMOTE_ADDR="127.0.0.1",
                                             HTTP_X_FORWARDED_FOR=colleague)
        response = login(colleague_client, email)
        assert response.status_code == 302, response.get_data(as_text=True)
        assert response.headers["Location"].endswith("/dashboard")
    finally:
        with behind_proxy.test_request_context():
            for address in (guesser, colleague):
                signin_throttle().clear(address=address)


# --- headers ------------------------------------------------------------------------------------

def _directives(policy):
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def test_pages_and_api_answers_carry_a_policy_without_inline_script(client, factory):
    shop = factory.shop(role="admin")
    page = client.get("/login")
    api = client.get(f"/api/v1/orders/{shop['order_id']}", headers=bearer(shop["token"]))
    for response in (page, api):
        policy = _directives(response.headers["Content-Security-Policy"])
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'self'"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_only_flask_admin_pages_allow_inline_code(app, client, auth, factory):
    auth(role="admin")
    admin_page = client.get("/admin/users/")
    assert admin_page.status_code == 200
    policy = _directives(admin_page.headers["Content-Security-Policy"])
    assert "'unsafe-inline'" in policy["script-src"]
    dashboard = client.get("/dashboard")
    assert "'unsafe-inline'" not in dashboard.headers["Content-Security-Policy"]
    # The prefix is a path segment: /administrators (a 404 here) is not Flask-Admin's.
    assert "'unsafe-inline'" not in client.get("/administrators").headers[
        "Content-Security-Policy"]


def test_signed_in_pages_and_api_answers_are_never_stored(app, client, auth, factory):
    shop = factory.shop(role="admin")
    auth(shop["user_id"])
    for response in (client.get("/dashboard"), client.get("/"),
                     client.get(f"/orders/{shop['order_id']}"),
                     client.get(f"/api/v1/orders/{shop['order_id']}",
                                headers=bearer(shop["token"]))):
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"


def test_static_assets_may_be_cached(client):
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert "no-store" not in response.headers.get("Cache-Control", "")
    response.close()


def test_hsts_in_production_only(client, build_app, monkeypatch, database_url, redis_url):
    assert "Strict-Transport-Security" not in client.get("/livez").headers
    monkeypatch.setenv("SECRET_KEY", "production-test-secret")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    production = build_app(env="production")
    hsts = production.test_client().get("/livez").headers["Strict-Transport-Security"]
    assert re.fullmatch(r"max-age=\d+; includeSubDomains", hsts)
    assert int(hsts.split("=")[1].split(";")[0]) >= 180 * 24 * 3600


def test_templates_have_no_inline_style_script_or_event_handler():
    """What the policy forbids must not be in our templates (the browser test sees the rest)."""
    offences = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        # Jinja statements ({% macro button(style=...) %}) are not HTML; keep their line breaks.
        source = re.sub(r"{%.*?%}", lambda m: "\n" * m.group(0).count("\n"),
                        path.read_text(), flags=re.S)
        for pattern in (r"\sstyle\s*=\s*[\"']", r"\son[a-z]+\s*=\s*[\"']", r"<style[\s>]",
                        r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>",
                        r"javascript:"):
            for match in re.finditer(pattern, source):
                line = source.count("\n", 0, match.start()) + 1
                offences.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    assert not offences, "\n".join(offences)


# --- request ids --------------------------------------------------------------------------------

@pytest.mark.parametrize("sent", ["-1+cmd|' /C calc'!A0", "=HYPERLINK(\"http://x\")",
                                  "a" * 65, "id with spaces", "ünïcode", ""])
def test_an_unsafe_request_id_is_replaced_by_a_generated_one(client, sent):
    response = client.get("/livez", headers={"X-Request-ID": sent})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"]), \
        response.headers["X-Request-ID"]


@pytest.mark.parametrize("sent", ["req-audit-42", "A.b_c-1", "x" * 64])
def test_a_safe_request_id_is_kept(client, sent):
    assert client.get("/livez", headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent


# --- store time ---------------------------------------------------------------------------------

def test_tzdata_is_a_dependency_and_store_zones_resolve_without_a_system_database():
    with open(ROOT / "pyproject.toml", "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    assert any(re.match(r"tzdata\b", dependency) for dependency in dependencies)
    # An empty PYTHONTZPATH hides /usr/share/zoneinfo: only the tzdata package can answer.
    probe = ("from zoneinfo import ZoneInfo; from datetime import datetime; "
             "print(datetime(2026, 7, 1, 12, tzinfo=ZoneInfo('America/Los_Angeles')).utcoffset()"
             ".total_seconds())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONTZPATH=""), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(-7 * 3600.0)
