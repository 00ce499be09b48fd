"""Committing without reading back what this transaction itself just wrote."""
from sqlalchemy import inspect

from models import db


def commit_keeping(*objects):
    """Commit; then expire what the session holds, as every commit does, except `objects`.

    For rows the caller locked or wrote in this transaction, and reads again right after the
    commit: what they hold is what was committed, and loading them again would only repeat it.
    Values changed behind an object's back (an UPDATE statement) are not what it holds: leave
    such objects out. The caller expires them (`expire`) once done, so that nothing read later
    in the same session can see them as they were.
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


def expire(*objects):
    """Expire what commit_keeping kept: loaded again when next used, as after any commit."""
    session = db.session()
    for obj in objects:
        state = inspect(_unproxied(obj), raiseerr=False)
        if state is not None and state.session is session:
            session.expire(state.obj())


def _unproxied(obj):
    """The object behind a context-local proxy (flask_login's current_user is one)."""
    unwrap = getattr(obj, "_get_current_object", None)
    return unwrap() if unwrap is not None else obj
