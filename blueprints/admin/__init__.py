"""Flask-Admin at /admin, for the admin role only."""


def init_admin(app):
    pass
