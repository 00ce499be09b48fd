"""Idempotency keys as payment APIs do them, enforced by a unique row in the database.

The first request with a key inserts the row (state in_progress) and runs; the same key again
replays the stored answer when the body matches, is refused with 422 when it does not, and with
409 while the first is still running. Only one concurrent insert can win the unique constraint,
so two requests with one key can never both run — whichever process or machine they reach.
"""
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from cancellation.errors import CancelDeskError, ValidationFailed
from models import db, utcnow
from models.idempotency import IdempotencyKey

TTL = timedelta(hours=24)
# A key still "in progress" this long after it was taken belongs to a request that died with its
# process; it is taken over rather than refused for a day.
ABANDONED_AFTER = timedelta(minutes=2)
MAX_KEY_LENGTH = 255


class KeyReused(CancelDeskError):
    status = 422
    code = "idempotency_key_reused"


class KeyInFlight(CancelDeskError):
    status = 409
    code = "request_in_progress"


@dataclass
class Replay:
    status: int
    body: dict


def check_key(key):
    if key is None or not key.strip():
        raise ValidationFailed("The X-Idempotency-Key header is required on this request "
                               "(generate one with uuidgen and reuse it only to retry).",
                               details={"fields": [{"field": "X-Idempotency-Key",
                                                    "message": "required"}]})
    key = key.strip()
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed("X-Idempotency-Key must be at most 255 printable characters.",
                               details={"fields": [{"field": "X-Idempotency-Key",
                                                    "message": "invalid"}]})
    return key


def fingerprint(method, path, body):
    """Method, path and body; JSON bodies are compared by content, not by formatting."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True,
                               separators=(",", ":")).encode()
    except ValueError:
        canonical = body or b""
    return hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + canonical).hexdigest()


def begin(user_id, key, method, path, fingerprint_):
    """Take the key (returns its row id) or answer for it (Replay, or raise 409/422)."""
    for _ in range(3):
        now = utcnow()
        row = IdempotencyKey(user_id=user_id, key=key, method=method, path=path[:255],
                             fingerprint=fingerprint_, state="in_progress", created_at=now,
                             expires_at=now + TTL)
        db.session.add(row)
        try:
            db.session.commit()
            return row.id
        except IntegrityError:
            db.session.rollback()
        existing = db.session.scalar(select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key))
        if existing is None:
            continue  # deleted between our insert and our read: try again
        abandoned = (existing.state == "in_progress"
                     and existing.created_at < now - ABANDONED_AFTER)
        if existing.expires_at <= now or abandoned:
            # Deleted only if still expired or abandoned (compare-and-set): a request that
            # completed its key since we read it keeps it, and we replay its answer.
            db.session.execute(delete(IdempotencyKey).where(
                IdempotencyKey.id == existing.id,
                or_(IdempotencyKey.expires_at <= now,
                    and_(IdempotencyKey.state == "in_progress",
                         IdempotencyKey.created_at < now - ABANDONED_AFTER))))
            db.session.commit()
            continue
        if existing.fingerprint != fingerprint_:
            raise KeyReused("This idempotency key was already used with a different request "
                            "(method, path or body). Use a new key for a new request.")
        if existing.state == "in_progress":
            raise KeyInFlight("A request with this idempotency key is still being processed; "
                              "retry in a moment with the same key.")
        return Replay(existing.response_status, existing.response_body)
    raise KeyInFlight("The idempotency key is contended; retry with the same key.")


def complete(row_id, status, body):
    """Store the answer on the key this request took — unless it was taken over meanwhile."""
    db.session.execute(update(IdempotencyKey).where(
        IdempotencyKey.id == row_id, IdempotencyKey.state == "in_progress")
        .values(state="completed", response_status=status, response_body=body)
        .execution_options(synchronize_session=False))
    db.session.commit()


def release(row_id):
    """The request failed on our side: free the key so the client's retry runs for real."""
    db.session.rollback()
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))
    db.session.commit()


def purge_expired():
    deleted = db.session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow())).rowcount
    db.session.commit()
    return deleted
