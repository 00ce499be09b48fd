"""Appending to and verifying the hash-chained audit trail."""
import hashlib
import json
from dataclasses import dataclass
from types import SimpleNamespace

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from models import AuditChainHead, AuditEvent, db, isoformat, utcnow
from models.audit import GENESIS


@dataclass(frozen=True)
class AuditContext:
    """Where a change came from; built by the web layer, passed down to the domain."""

    request_id: str | None = None
    ip: str | None = None
    source: str = "panel"


SYSTEM = AuditContext(source="system")


def _canonical(event):
    body = {
        "seq": event.seq, "created_at": isoformat(event.created_at),
        "actor_id": event.actor_id, "actor_label": event.actor_label, "action": event.action,
        "target_type": event.target_type, "target_id": event.target_id,
        "store_id": event.store_id, "order_id": event.order_id, "before": event.before,
        "after": event.after, "request_id": event.request_id, "ip": event.ip,
        "prev_hash": event.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def compute_hash(event):
    return hashlib.sha256(_canonical(event).encode()).hexdigest()


def _lock_head():
    if db.session.get_bind().dialect.name == "sqlite":
        # SQLite ignores FOR UPDATE: a write is what takes its database lock, which then
        # serialises every appender (the busy timeout waits for it). The head is read by that
        # same write (RETURNING), so it is the head the last committed appender left.
        head = db.session.scalar(
            update(AuditChainHead).where(AuditChainHead.id == 1)
            .values(seq=AuditChainHead.seq).returning(AuditChainHead)
            .execution_options(populate_existing=True, synchronize_session=False))
        if head is not None:
            return head
    head = db.session.scalar(
        select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()
        .execution_options(populate_existing=True))
    if head is None:
        # The very first event: two first writers may race to create the head row.
        try:
            with db.session.begin_nested():
                db.session.add(AuditChainHead(id=1, seq=0, hash=GENESIS))
        except IntegrityError:
            pass  # the other writer created it; lock theirs
        head = db.session.scalar(
            select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()
            .execution_options(populate_existing=True))
    return head


def record(actor, action, *, target_type, target_id=None, store_id=None, order_id=None,
           before=None, after=None, context=None):
    """Append one event inside the caller's transaction. Take this lock last."""
    head = _lock_head()
    event = AuditEvent(**_event_values(actor, action, target_type, target_id, store_id, order_id,
                                       before, after, context or SYSTEM))
    _chain(event, head)
    db.session.add(event)
    return event


def record_each(actor, events, *, context=None):
    """Append one event per dict of `events` (action, target_type, target_id, store_id,
    order_id, before, after and, optionally, created_at: when it happened) — each its own
    action — in a single INSERT, chained in the given order: what one outbox delivery settled,
    a bulk batch's cancellations. Take this lock last. Returns how many."""
    if not events:
        return 0
    context = context or SYSTEM
    head = _lock_head()
    cursor = SimpleNamespace(seq=head.seq, hash=head.hash)
    rows = []
    for given in events:
        row = SimpleNamespace(**_event_values(
            actor, given["action"], given["target_type"], given.get("target_id"),
            given.get("store_id"), given.get("order_id"), given.get("before"),
            given.get("after"), context, given.get("created_at")))
        _chain(row, cursor)
        rows.append(vars(row))
    _append(head, rows)
    return len(rows)


def _append(head, rows):
    """Insert the chained `rows` and move the locked head row to the last of them, each with
    one Core statement, then tell the session's head object it holds what the database now
    holds: no unit-of-work flush of it follows, and a later append in this transaction (which
    locks and reads the head again) chains after these rows."""
    db.session.execute(insert(AuditEvent.__table__), rows)
    last = rows[-1]
    heads = AuditChainHead.__table__
    db.session.execute(update(heads).where(heads.c.id == head.id)
                       .values(seq=last["seq"], hash=last["hash"]))
    set_committed_value(head, "seq", last["seq"])
    set_committed_value(head, "hash", last["hash"])


def _event_values(actor, action, target_type, target_id, store_id, order_id, before, after,
                  context, created_at=None):
    return {
        "created_at": (created_at or utcnow()).replace(microsecond=0),
        "actor_id": getattr(actor, "id", None),
        "actor_label": getattr(actor, "email", None) or context.source,
        "action": action, "target_type": target_type,
        "target_id": None if target_id is None else str(target_id),
        "store_id": store_id, "order_id": order_id,
        "before": _jsonable(before), "after": _jsonable(after),
        "request_id": context.request_id, "ip": context.ip,
    }


def _chain(event, head):
    """Link `event` after the head and move the head to it."""
    event.seq, event.prev_hash = head.seq + 1, head.hash
    event.hash = compute_hash(event)
    head.seq, head.hash = event.seq, event.hash


def _jsonable(value):
    return None if value is None else json.loads(json.dumps(value, default=str))


@dataclass
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str | None = None


def verify_chain(batch=1000):
    """Walk the chain in order; name the first event whose hash or link does not hold."""
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    # Read the head first: events appended while we walk are newer than it and not compared
    # with it, so a busy chain is not reported as truncated.
    head = db.session.scalar(select(AuditChainHead).where(AuditChainHead.id == 1)
                             .execution_options(populate_existing=True))
    query = select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    if head is not None:
        query = query.where(AuditEvent.seq <= head.seq)
    for event in db.session.scalars(query):
        if event.seq != expected_seq:
            return ChainReport(False, checked, expected_seq,
                               f"event #{expected_seq} is missing (next found is #{event.seq})")
        if event.prev_hash != expected_prev:
            return ChainReport(False, checked, event.seq,
                               f"event #{event.seq} does not link to the event before it")
        if compute_hash(event) != event.hash:
            return ChainReport(False, checked, event.seq,
                               f"event #{event.seq} was altered after it was written")
        expected_prev, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
    if head is not None and (head.seq != checked or head.hash != expected_prev):
        return ChainReport(False, checked, checked + 1,
                           f"events after #{checked} were removed")
    return ChainReport(True, checked)
