"""Settings an admin changes at run time (thresholds, switches), with typed defaults."""
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import JSON, String
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


class Setting(db.Model):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)

    @classmethod
    def get(cls, key):
        remembered = _snapshot.get()
        if remembered is not None and key in remembered:
            return remembered[key]
        row = db.session.get(cls, key)
        value = DEFAULTS[key] if row is None else row.value
        if remembered is not None:
            remembered[key] = value
        return value

    @classmethod
    @contextmanager
    def snapshot(cls):
        """Read each setting at most once inside the block (a bulk batch: the thresholds of
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
        return row
