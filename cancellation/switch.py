"""The maintenance switch: whether maintenance mode is on, and the refusal of a change that waits
for its end. Turning it on and off, and what it holds meanwhile: `cancellation/maintenance.py`.
"""
from flask import has_request_context, request as http_request
from sqlalchemy import select

from cancellation.errors import CancelDeskError
from models import Setting, db
from models.setting import DEFAULTS

SETTING = "maintenance_mode"
CANCELLING_PAUSED = ("orders are not cancelled until it ends, so nothing was changed. Approval "
                     "requests stay open: approve again once maintenance is over.")
REINSTATING_PAUSED = ("orders are not reinstated until it ends, so nothing was changed. Ask "
                      "again once maintenance is over.")


class MaintenanceInProgress(CancelDeskError):
    """503: this change waits for the end of maintenance (see the module docstring)."""

    status = 503
    code = "maintenance_mode"


def is_on(fresh=False):
    """Whether maintenance mode is on. Read once per HTTP request (the base template and every
    cancel ask), once per `Setting.snapshot()` block (a bulk batch); `fresh` reads the database
    now (the release and the job runner do, before they act)."""
    cached = has_request_context() and not fresh
    if cached and hasattr(http_request, "_cancel_desk_maintenance"):
        return http_request._cancel_desk_maintenance
    if fresh:
        value = db.session.scalar(select(Setting.value).where(Setting.key == SETTING))
        value = DEFAULTS[SETTING] if value is None else value
    else:
        value = Setting.get(SETTING)
    value = bool(value)
    _remember(value)
    return value


def _remember(value):
    if has_request_context():
        http_request._cancel_desk_maintenance = value


def refuse_while_on(why):
    """Raise MaintenanceInProgress ("Maintenance is in progress: <why>") while it is on."""
    if is_on():
        raise MaintenanceInProgress(f"Maintenance is in progress: {why}")
