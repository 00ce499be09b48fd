"""Feature blueprints: each parses, authorizes, calls the domain and renders."""


def register_blueprints(app):
    from app import csrf
    from blueprints.api_common import bp as api
    from blueprints.api_v1 import bp as api_v1
    from blueprints.auth import bp as auth
    from blueprints.cli import bp as cli
    from blueprints.health import bp as health
    from blueprints.orders import bp as orders

    for blueprint in (auth, orders, api, api_v1, health, cli):
        app.register_blueprint(blueprint)
    # The API reads no session cookie (bearer tokens only), so CSRF does not apply to it.
    for blueprint in (api, api_v1):
        csrf.exempt(blueprint)
