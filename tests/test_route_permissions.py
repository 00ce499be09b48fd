"""Every route's permission, generated from the app's URL map.

Each endpoint is public (listed below), login-only (listed below), a Flask-Admin view (admin role
only), or carries the capability `blueprints.auth.permissions.requires` put on it. A new route
that is none of these fails the first test: no route is left unchecked. Then, for every route and
method: an anonymous request is refused (a login redirect in the panel, 401 JSON on the API), and
each role gets 403 from every route needing a capability it lacks.
"""
import re

import pytest

from conftest import bearer, csrf_from

# Reachable without signing in, on purpose.
PUBLIC = {"auth.login", "health.healthz", "health.livez", "health.readyz", "docs.openapi_json",
          "api.issue_token"}
# Any signed-in user, whatever their role.
LOGIN_ONLY = {"auth.logout", "api.revoke_token"}
ROLES = ("admin", "store_manager", "fulfillment", "customer_service", "ops_engineer")


def is_static(endpoint):
    return endpoint == "static" or endpoint.endswith(".static")


def admin_endpoints(app):
    admin = app.extensions["cancel_desk_admin"]
    return {view.endpoint for view in admin._views}


def is_admin_view(app, endpoint):
    return endpoint.split(".")[0] in admin_endpoints(app)


def checked_routes(app):
    """(rule, method, capability or 'administer' for Flask-Admin) of every non-public route."""
    routes = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in PUBLIC or is_static(rule.endpoint):
            continue
        view = app.view_functions[rule.endpoint]
        capability = getattr(view, "required_capability", None)
        if is_admin_view(app, rule.endpoint):
            capability = "administer"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((rule, method, capability))
    return routes


def url_of(rule):
    """The rule with every argument filled in: ids that exist nowhere, plain words elsewhere."""
    def fill(match):
        converter = match.group(1) or ""
        return "2147483000" if converter.startswith("int") else "csv"
    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?\w+>", fill, rule.rule)


def send(client, method, url, token=None, csrf=None):
    headers = {"X-Idempotency-Key": "perm-check-key"}
    if token:
        headers.update(bearer(token))
    if url.startswith("/api/"):
        return client.open(url, method=method, headers=headers, json={})
    return client.open(url, method=method, data={"csrf_token": csrf} if csrf else None)


def test_every_route_is_public_login_only_admin_or_has_a_capability(app):
    from blueprints.auth.permissions import ALL_CAPABILITIES

    unchecked = []
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint in PUBLIC | LOGIN_ONLY or is_static(endpoint) or is_admin_view(app, endpoint):
            continue
        capability = getattr(app.view_functions[endpoint], "required_capability", None)
        if capability is None:
            unchecked.append(f"{rule.rule} ({endpoint})")
        else:
            assert capability in ALL_CAPABILITIES, (endpoint, capability)
    assert not unchecked, ("routes with neither a capability (@requires) nor a listing in "
                           f"PUBLIC / LOGIN_ONLY: {unchecked}")
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert PUBLIC | LOGIN_ONLY <= endpoints, "stale entries in PUBLIC / LOGIN_ONLY"
    # Flask-Admin views are all behind the admin-only access rule.
    from blueprints.admin import AdminOnly
    for view in app.extensions["cancel_desk_admin"]._views:
        assert isinstance(view, AdminOnly), view


def test_anonymous_requests_are_refused_everywhere(app):
    client = app.test_client()
    csrf = csrf_from(client.get("/login"))  # so a POST is refused for being anonymous, not CSRF
    routes = [(rule, method) for rule, method, _ in checked_routes(app)]
    assert len(routes) > 40
    for rule, method in routes:
        url = url_of(rule)
        response = send(client, method, url, csrf=csrf)
        if url.startswith("/api/"):
            assert response.status_code == 401, (method, url, response.status_code)
            assert response.json["error"]["code"] == "unauthorized", (method, url)
        else:
            assert response.status_code == 302, (method, url, response.status_code)
            assert response.headers["Location"].startswith("/login"), (method, url)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_403_where_it_lacks_the_capability(app, auth, factory, role):
    from cancellation.policy import CAPABILITIES
    from models import Role

    granted = CAPABILITIES[Role(role)]
    store = factory.store()
    user_id = factory.user(role, stores=[store])
    token = factory.token(user_id)
    signed_in = auth(user_id, client=app.test_client())
    client, csrf = signed_in.client, signed_in.csrf("/dashboard")

    refused = 0
    for rule, method, capability in checked_routes(app):
        if capability is None or capability in granted:
            continue
        url = url_of(rule)
        response = send(client, method, url, token=token, csrf=csrf)
        assert response.status_code == 403, (role, method, url, capability,
                                              response.status_code)
        if url.startswith("/api/"):
            assert response.json["error"]["code"] == "forbidden"
        refused += 1
    if role != "admin":
        assert refused > 0
