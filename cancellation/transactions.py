"""Committing: without reading back what this transaction itself just wrote, and what follows a
commit (`after_commit`)."""
import logging

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from models import db

log = logging.getLogger(__name__)


def commit_keeping(*objects):
    """Commit; then expire what the session holds, as every commit does, except `objects`.

    For rows the caller locked or wrote in this transaction, and reads again right after the
    commit: what they hold is what was committed, and loading them again would only repeat it.
    Values changed behind an object's back (an UPDATE statement) are not what it holds: leave
    such objects out, or make them hold what was written (`effects` does, for the orders and
    items it writes).
    """
    kept = {inspect(_unproxied(obj), raiseerr=False) for obj in objects}
    session = db.session()
    expiring = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expiring
    if expiring:
        for obj in list(session.identity_map.values()):
            if inspect(obj) not in kept:
                session.expire(obj)


def _unproxied(obj):
    """The object behind a context-local proxy (flask_login's current_user is one)."""
    unwrap = getattr(obj, "_get_current_object", None)
    return unwrap() if unwrap is not None else obj


# --- after the commit -------------------------------------------------------------------------

_AFTER_COMMIT = "cancel_desk.after_commit"


def after_commit(callback, *args):
    """Call `callback(*args)` once the current transaction commits, never if it rolls back.

    The one after-commit mechanism: what a transaction hands to the workers (its outbox rows,
    an approval request to route, a notice to send) goes this way, so a task never runs before
    the rows it reads are committed, and never for rows that were rolled back. The callback runs
    outside any transaction and must not use the database (it sends tasks)."""
    db.session.info.setdefault(_AFTER_COMMIT, []).append((callback, args))


@event.listens_for(Session, "after_commit")
def _run_after_commit(session):
    if session.in_nested_transaction():
        return
    for callback, args in session.info.pop(_AFTER_COMMIT, ()):
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - the rows are committed; the sweeps send them later
            log.warning("after-commit %s failed; the sweep will retry", callback, exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session):
    if not session.in_nested_transaction():
        session.info.pop(_AFTER_COMMIT, None)
