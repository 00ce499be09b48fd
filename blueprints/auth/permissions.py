"""One Flask-Principal permission per capability, and the decorator routes use to require one.

A denial answers JSON (401/403) on the API and a login redirect or 403 page in the browser.
"""
from functools import wraps

from flask import abort, request
from flask_login import current_user
from flask_principal import ActionNeed, Permission

from cancellation.policy import CAPABILITIES

ALL_CAPABILITIES = sorted(set().union(*CAPABILITIES.values()))
PERMISSIONS = {name: Permission(ActionNeed(name)) for name in ALL_CAPABILITIES}


def permission(capability):
    return PERMISSIONS[capability]


def is_api_request():
    return request.path.startswith("/api/")


def requires(capability):
    """Login plus the named capability, checked on the server for every call."""
    perm = PERMISSIONS[capability]

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                abort(401)
            if not perm.can():
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_capability = capability
        return wrapped

    return decorator
