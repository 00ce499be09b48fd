"""Feature blueprints: each parses, authorizes, calls the domain and renders."""


def register_blueprints(app):
    from blueprints.api_common import bp as api
    from blueprints.api_v1 import bp as api_v1
    from blueprints.api_v2 import bp as api_v2
    from blueprints.auth import bp as auth
    from blueprints.docs import bp as docs
    from blueprints.health import bp as health
    from blueprints.orders import bp as orders

    _rate_limit(app, api_v2)
    for blueprint in (auth, orders, api, api_v1, api_v2, docs, health):
        app.register_blueprint(blueprint)
    from blueprints.approvals import bp as approvals
    app.register_blueprint(approvals)
    from blueprints.audit import bp as audit
    from blueprints.dashboard import bp as dashboard
    for blueprint in (dashboard, audit):
        app.register_blueprint(blueprint)
    # The API reads no session cookie (bearer tokens only), so CSRF does not apply to it.
    for blueprint in (api, api_v1, api_v2):
        app.extensions["csrf"].exempt(blueprint)


def _rate_limit(app, blueprint):
    """Per-user request rate on API v2, counted in Redis so every web process shares it."""
    from flask import current_app
    from flask_limiter import Limiter

    from blueprints.api_common import rate_limit_key

    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 2})
    limiter = Limiter(rate_limit_key, app=app, headers_enabled=True)
    # One budget per user across every v2 route (a plain `limit` on a blueprint counts each
    # route separately, so a user could make the limit's worth of requests on every endpoint).
    limiter.shared_limit(lambda: current_app.config["API_V2_RATE_LIMIT"],
                         scope="api_v2")(blueprint)
    app.extensions["rate_limiter"] = limiter

    def retry_after_only_when_limited(response):
        """Flask-Limiter puts Retry-After on every response it counted; the header means
        "wait before retrying" and belongs on a 429 only (the X-RateLimit-* headers stay)."""
        if response.status_code != 429:
            response.headers.pop("Retry-After", None)
        return response

    # after_request hooks run last-registered first: at the front of the list, this one runs
    # after the limiter has added its headers.
    app.after_request_funcs.setdefault(None, []).insert(0, retry_after_only_when_limited)
