"""The approval-request rows: their states, and the two ways every decision touches one — the
lock (the order's row first) and the compare-and-set that moves a request from an open state.

The decisions themselves (file, route, approve, reject, withdraw, expire) are
`cancellation/approvals.py`'s; each moves a request only through `move`, so of two callers
racing exactly one wins and the other gets 409 `approval_closed`.
"""
from sqlalchemy import select, update

from cancellation.locks import lock_order
from models import ApprovalRequest, db

OPEN = ("pending", "escalated")
CLOSED = ("approved", "rejected", "expired", "stale", "withdrawn")


def lock(approval_id):
    """Lock a request, and its order first: every path that locks both (cancel, approve,
    reject, route, expire) takes the order row before the request row, so two of them can
    never wait on each other in a cycle."""

    order_id = db.session.scalar(select(ApprovalRequest.order_id).where(
        ApprovalRequest.id == approval_id))
    if order_id is None:
        return None
    lock_order(order_id)
    return db.session.scalar(
        select(ApprovalRequest).where(ApprovalRequest.id == approval_id).with_for_update()
        .execution_options(populate_existing=True))


def move(approval, status, *, allowed=OPEN, only_unrouted=False, **values):
    """Compare-and-set: move the request to `status` only if it is still in `allowed`.

    One UPDATE ... WHERE status IN (...): of two callers racing (an approve and a reject, two
    sweeps, a reject and the expiry) exactly one changes the row, on SQLite — where SELECT ...
    FOR UPDATE is a no-op and writers are serialised by the database lock — as on PostgreSQL.
    Returns whether this caller won; `approval` then holds the row as written.
    """
    db.session.flush()
    condition = [ApprovalRequest.id == approval.id, ApprovalRequest.status.in_(allowed)]
    if only_unrouted:
        condition.append(ApprovalRequest.routed_at.is_(None))
    won = db.session.execute(
        update(ApprovalRequest).where(*condition).values(status=status, **values)
        .execution_options(synchronize_session=False)).rowcount == 1
    db.session.refresh(approval)
    return won
