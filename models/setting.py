"""Settings an admin changes at run time (thresholds, switches), with typed defaults."""
from contextlib import contextmanager
from contextvars import ContextVar

from flask import has_request_context, request
from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, mapped_column

from models import db

DEFAULTS = {
    "approval_threshold_cents": 50000,
    "approval_age_days": 30,
    "abuse_cancels_per_hour": 25,
    # A staff member cancelling more than this many times their store's per-staff average
    # over the last 7 days (and at least abuse_outlier_min_count times) is flagged too.
    "abuse_outlier_factor": 3,
    "abuse_outlier_min_count": 10,
    "reinstate_window_hours": 2,
    "maintenance_mode": False,
    # An approval request nobody decided lapses after this long (cancellation/approvals.py).
    "approval_expiry_hours": 48,
}


_snapshot = ContextVar("settings_snapshot", default=None)


def _remembered():
    """Where this block or request keeps the settings it read ({} until the first read), or
    None: a bulk batch's snapshot, else the HTTP request's own. Kept on the request object, not
    on `g`: an app context can outlive a request (a test's, a task's), a request never does."""
    remembered = _snapshot.get()
    if remembered is not None or not has_request_context():
        return remembered
    remembered = getattr(request, "_cancel_desk_settings", None)
    if remembered is None:
        remembered = request._cancel_desk_settings = {}
    return remembered


class Setting(db.Model):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)

    @classmethod
    def get(cls, key):
        """The setting's value (its default when no row holds one). Inside a request or a
        `snapshot()` block every setting is read at once, on the first call, in one query."""
        remembered = _remembered()
        if remembered is None:
            row = db.session.get(cls, key)
            return DEFAULTS[key] if row is None else row.value
        if not remembered:
            remembered.update(cls.all())
        return remembered[key]

    @classmethod
    def all(cls):
        """{key: value} of every setting, defaults included: one query."""
        stored = dict(db.session.execute(select(cls.key, cls.value)).all())
        return {key: stored.get(key, default) for key, default in DEFAULTS.items()}

    @classmethod
    @contextmanager
    def snapshot(cls):
        """Read the settings at most once inside the block (a bulk batch: the thresholds of
        one batch need not be read again for each of its orders)."""
        token = _snapshot.set({})
        try:
            yield
        finally:
            _snapshot.reset(token)

    @classmethod
    def put(cls, key, value):
        if key not in DEFAULTS:
            raise KeyError(key)
        row = db.session.get(cls, key) or cls(key=key)
        row.value = value
        db.session.add(row)
        remembered = _remembered()
        if remembered:  # what this request or block reads from now on is the new value
            remembered[key] = value
        return row
