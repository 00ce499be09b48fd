"""Delivering the outbox: refunds and notifications written by a cancellation, sent by workers.

A failed delivery never undoes the cancellation: the row is marked failed, the cancellation gets
its manual-handling flag, a retry is scheduled with exponential back-off, and after the last
attempt it waits for a person (the panel's retry button). `sweep` re-dispatches rows whose task
was lost. Every delivery passes an idempotency key to the external party, so a redelivered task
or a double click never pays or sends twice.
"""
import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from models import Cancellation, Notification, Order, Refund, db, money, utcnow
from models.delivery import DeliveryStatus

from cancellation.adapters import DeliveryError, notifier, payment_gateway
from cancellation.audit import SYSTEM, record
from cancellation.errors import DeliveryClaimed, InvalidState, NotFound

log = logging.getLogger(__name__)

RETRYABLE = (DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)
TASKS = {Refund: "cancel_desk.deliver_refund", Notification: "cancel_desk.deliver_notification"}
BATCH_TASKS = {Refund: "cancel_desk.deliver_refunds",
               Notification: "cancel_desk.deliver_notifications"}
FLAGS = {Refund: "flag_manual_refund", Notification: "flag_manual_notification"}


def hand_to_workers(task, row_id, countdown=None):
    """Queue `task(row_id)`. The row it works on is already committed, so a broker outage is
    logged, not raised: the periodic sweeps send it again later."""
    try:
        current_app.extensions["celery"].send_task(task, args=[row_id], countdown=countdown)
    except Exception:  # noqa: BLE001 - the row is safe in the database; a sweep re-dispatches
        log.warning("could not dispatch %s(%s); the sweep will retry", task, row_id,
                    exc_info=True)


def send(model, row_id, countdown=None):
    """Hand a refund or notification row to the workers."""
    hand_to_workers(TASKS[model], row_id, countdown)


def send_many(model, row_ids):
    """Hand many refunds or notifications to the workers as one task (a bulk job's batch)."""
    hand_to_workers(BATCH_TASKS[model], list(row_ids))


def _pending_ids(model, cancellation_ids):
    return db.session.scalars(select(model.id).where(
        model.cancellation_id.in_(cancellation_ids),
        model.status == DeliveryStatus.PENDING.value).order_by(model.id)).all()


def deliver_many(model, row_ids):
    """Worker side of `send_many`: each row is claimed and delivered exactly as on its own."""
    deliver_one = deliver_refund if model is Refund else deliver_notification
    return [deliver_one(row_id) for row_id in row_ids]


def dispatch_for(cancellation):
    """After commit: queue the pending outbox rows a cancellation wrote."""
    for model in (Refund, Notification):
        for row_id in _pending_ids(model, [cancellation.id]):
            send(model, row_id)


def dispatch_for_batch(cancellation_ids):
    """After a bulk batch: its pending outbox rows as one task per kind, not one per row."""
    for model in (Refund, Notification):
        ids = _pending_ids(model, cancellation_ids) if cancellation_ids else []
        db.session.rollback()
        if ids:
            send_many(model, ids)


def backoff_seconds(attempts):
    base = current_app.config["DELIVERY_BACKOFF_SECONDS"]
    return base * (2 ** max(attempts - 1, 0))


def _claim(model, row_id):
    """The row `_take` claimed, or None (cancellation/approvals.py delivers its notices so)."""
    claim = _take(model, row_id)
    return claim[0] if claim else None


def _take(model, row_id):
    """Move the row to `processing` and count the attempt: (row, attempt number), or None when
    there is nothing (left) to deliver. `processing` is what a duplicate dispatch (the back-off
    task and the sweep both sent it) finds and leaves alone, and what a reinstatement refuses to
    void."""
    row = db.session.scalar(select(model).where(model.id == row_id).with_for_update()
                            .execution_options(populate_existing=True))
    now = utcnow()
    if row is None or not _claimable(row, now):
        db.session.rollback()
        return None
    # Compare-and-set on status and attempts: where the database has no row locks (SQLite) two
    # claimers may both have read the row; only one of them takes it.
    attempt = row.attempts + 1
    claimed = db.session.execute(
        update(model).where(model.id == row.id, model.attempts == row.attempts,
                            model.status == row.status)
        .values(status=DeliveryStatus.PROCESSING.value, attempts=attempt,
                dispatched_at=now, next_attempt_at=None)
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return (row, attempt) if claimed else None


def _claimable(row, now):
    if row.status == DeliveryStatus.PENDING.value:
        return True
    if row.status == DeliveryStatus.FAILED.value:
        return _retry_due(row, now)
    if row.status == DeliveryStatus.PROCESSING.value:  # its worker died mid-delivery
        return row.dispatched_at is None or row.dispatched_at < _stale_before(now)
    return False  # succeeded or voided


def _stale_before(now):
    return now - timedelta(seconds=current_app.config["OUTBOX_STALE_SECONDS"])


def _retry_due(row, now):
    return (row.attempts < current_app.config["DELIVERY_MAX_ATTEMPTS"]
            and row.next_attempt_at is not None and row.next_attempt_at <= now)


def _set_flag(row, value):
    if row.cancellation_id is not None:
        cancellation = db.session.get(Cancellation, row.cancellation_id)
        setattr(cancellation, FLAGS[type(row)], value)


def _settle(row, attempt, action, values, after):
    """Write how the claimed delivery went, as a compare-and-set on `processing` and the attempt
    this worker claimed. False when the row was taken over meanwhile (the claim went stale and
    another worker took it): that worker's outcome stands and nothing is written here."""
    model = type(row)
    settled = db.session.execute(
        update(model).where(model.id == row.id, model.attempts == attempt,
                            model.status == DeliveryStatus.PROCESSING.value)
        .values(**values).execution_options(synchronize_session=False)).rowcount
    if not settled:
        db.session.rollback()
        log.warning("%s %s was taken over while this worker delivered it; its outcome stands",
                    model.__name__, row.id)
        return False
    _set_flag(row, values["status"] == DeliveryStatus.FAILED.value)
    record(None, action, target_type=model.__name__.lower(), target_id=row.id,
           order_id=row.order_id, store_id=row.order.store_id, context=SYSTEM,
           after={"attempts": attempt, **after})
    db.session.commit()
    return True


def _succeeded(row, attempt, action, values, **after):
    return _settle(row, attempt, action, {"status": DeliveryStatus.SUCCEEDED.value,
                                          "last_error": None, "next_attempt_at": None,
                                          **values}, after)


def _failed(row, attempt, action, error):
    """Mark failed and flag for manual handling; schedule the next try unless out of tries."""
    delay = next_attempt_at = None
    if attempt < current_app.config["DELIVERY_MAX_ATTEMPTS"]:
        delay = backoff_seconds(attempt)
        next_attempt_at = utcnow() + timedelta(seconds=delay)
    last_error = str(error)[:500]
    settled = _settle(row, attempt, action,
                      {"status": DeliveryStatus.FAILED.value, "last_error": last_error,
                       "next_attempt_at": next_attempt_at},
                      {"error": last_error, "next_attempt_in_s": delay})
    if settled and delay is not None:
        send(type(row), row.id, countdown=delay)
    return "failed" if settled else "nothing_to_do"


def deliver_refund(refund_id):
    """Pay one refund through the gateway. Returns succeeded, failed or nothing_to_do."""
    claim = _take(Refund, refund_id)
    if claim is None:
        return "nothing_to_do"
    refund, attempt = claim
    try:
        reference = payment_gateway().refund(
            idempotency_key=refund.idempotency_key, amount_cents=refund.amount_cents,
            order_number=refund.order.number, method=refund.method)
    except DeliveryError as exc:
        return _failed(refund, attempt, "refund.failed", exc)
    settled = _succeeded(refund, attempt, "refund.succeeded",
                         {"gateway_reference": reference, "succeeded_at": utcnow()},
                         amount=money(refund.amount_cents), reference=reference)
    return "succeeded" if settled else "nothing_to_do"


def notification_message(notification):
    """Subject and body: order number, items and amounts only — no other customer data."""
    order = notification.order
    cancellation = db.session.get(Cancellation, notification.cancellation_id) \
        if notification.cancellation_id else None
    partial = cancellation is not None and cancellation.kind == "partial"
    lines = [f"  {ci.quantity} x {ci.product.name}" for ci in (cancellation.items if cancellation
                                                               else [])]
    refund = cancellation.refund_cents if cancellation else 0
    subject = (f"Items removed from your order {order.number}" if partial
               else f"Your order {order.number} has been cancelled")
    body = [f"{'Some items of' if partial else 'Your'} order {order.number} "
            f"{'were' if partial else 'was'} cancelled.", "", "Cancelled items:", *lines]
    if refund:
        body += ["", f"A refund of ${money(refund)} is on its way to your original payment "
                 "method."]
    body += ["", "Questions? Reply to this message or call the store."]
    return subject, "\n".join(body)


def deliver_notification(notification_id):
    claim = _take(Notification, notification_id)
    if claim is None:
        return "nothing_to_do"
    notification, attempt = claim
    subject, body = notification_message(notification)
    try:
        notifier().send(idempotency_key=notification.idempotency_key,
                        recipient=notification.recipient, subject=subject, body=body)
    except DeliveryError as exc:
        return _failed(notification, attempt, "notification.failed", exc)
    settled = _succeeded(notification, attempt, "notification.sent", {"sent_at": utcnow()},
                         template=notification.template)
    return "succeeded" if settled else "nothing_to_do"


def retry(model, row_id, actor, context):
    """A person asks for another try (the panel's retry button, the v1 endpoints).

    A compare-and-set on the row as it was read (status, attempts, when it was handed over): of
    two clicks at once, or a click and a worker taking the row, one wins and the other changes
    nothing (409 `delivery_claimed`). So a refund paid, on its way or voided a moment ago is
    never put back in the queue by a click that read it before.
    """
    row = db.session.get(model, row_id)
    if row is None:
        raise NotFound(f"{model.__name__} not found.")
    if row.status == DeliveryStatus.VOIDED.value:
        raise InvalidState(f"This {model.__name__.lower()} was voided when the order was "
                           "reinstated; there is nothing to retry.")
    now = utcnow()
    if row.status in (DeliveryStatus.SUCCEEDED.value, DeliveryStatus.PROCESSING.value) \
            or _queued_since(row, _stale_before(now)):
        return row  # done, going out right now or just queued: a second click changes nothing
    handed = (model.dispatched_at.is_(None) if row.dispatched_at is None
              else model.dispatched_at == row.dispatched_at)
    moved = db.session.execute(
        update(model).where(model.id == row.id, model.status == row.status,
                            model.attempts == row.attempts, handed)
        .values(status=DeliveryStatus.PENDING.value, next_attempt_at=None, dispatched_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if not moved:
        db.session.rollback()
        raise DeliveryClaimed(
            f"This {model.__name__.lower()} was retried, or taken by a worker, at the same "
            "moment by someone else; nothing was changed. Refresh to see where it stands.")
    record(actor, f"{model.__name__.lower()}.retry_requested", target_type=model.__name__.lower(),
           target_id=row.id, order_id=row.order_id, store_id=row.order.store_id,
           after={"attempts_so_far": row.attempts}, context=context)
    db.session.commit()
    send(model, row.id)
    return row


def _queued_since(row, moment):
    """Pending and handed to the workers (or written) after `moment`: on its way."""
    return (row.status == DeliveryStatus.PENDING.value
            and (row.dispatched_at or row.created_at) >= moment)


def reprocess_refund(order, actor, context):
    """POST /orders/:id/refund: retry the failed refund, nudge a pending one, or report it paid."""
    if order.status != "cancelled" and not any(c.kind == "partial" for c in order.cancellations):
        raise InvalidState(f"Order {order.number} is {order.status}; only cancelled orders are "
                           "refunded.", details={"status": order.status})
    refunds = db.session.scalars(select(Refund).where(Refund.order_id == order.id)
                                 .order_by(Refund.id)).all()
    if not refunds:
        raise InvalidState(f"Order {order.number} has nothing to refund (it was not paid).")
    for refund in refunds:
        if refund.status in RETRYABLE:
            retry(Refund, refund.id, actor, context)
    return refunds


def resend_notification(order, actor, context):
    """POST /notifications/customer: retry a failed notice or send the cancellation notice again.

    A notice still pending is not duplicated, so a double click sends once.
    """
    cancellation = order.cancellations[-1] if order.cancellations else None
    if cancellation is None:
        raise InvalidState(f"Order {order.number} has no cancellation to notify about.")
    rows = db.session.scalars(select(Notification).where(Notification.order_id == order.id)
                              .order_by(Notification.id)).all()
    unsent = [n for n in rows if n.status in (*RETRYABLE, DeliveryStatus.PROCESSING.value)]
    if unsent:
        return retry(Notification, unsent[-1].id, actor, context)
    notification = Notification(
        order_id=order.id, cancellation_id=cancellation.id, channel="email",
        template=f"order_{cancellation.kind}_cancelled",
        recipient=order.customer.email if order.customer else None,
        idempotency_key=f"notify-cancellation-{cancellation.id}-resend-{len(rows)}")
    db.session.add(notification)
    try:
        db.session.flush()
    except IntegrityError:  # the same resend, written by a request that read the rows with us
        db.session.rollback()
        raise DeliveryClaimed(f"The cancellation notice for order {order.number} was sent again "
                              "by someone else at the same moment; it goes out once.") from None
    record(actor, "notification.resend_requested", target_type="notification",
           target_id=notification.id, order_id=order.id, store_id=order.store_id,
           context=context)
    db.session.commit()
    send(Notification, notification.id)
    return notification


SWEEP_LIMIT = 1000  # rows per kind and sweep
SWEEP_CHUNK = 100  # rows per task


def sweep():
    """Re-dispatch outbox rows whose task was lost or whose back-off has elapsed."""
    now = utcnow()
    stale = _stale_before(now)
    max_attempts = current_app.config["DELIVERY_MAX_ATTEMPTS"]
    counts = {}
    for model in (Refund, Notification):
        lost = or_(
            (model.status == DeliveryStatus.PENDING.value)
            & or_(model.dispatched_at < stale,
                  model.dispatched_at.is_(None) & (model.created_at < stale)),
            (model.status == DeliveryStatus.FAILED.value) & (model.next_attempt_at <= now)
            & (model.attempts < max_attempts)
            & or_(model.dispatched_at.is_(None), model.dispatched_at < stale),
            (model.status == DeliveryStatus.PROCESSING.value) & (model.dispatched_at < stale),
        )
        ids = db.session.scalars(select(model.id).where(lost).order_by(model.id)
                                 .limit(SWEEP_LIMIT)).all()
        # Stamped as handed over: a row still waiting in the queue behind other work is not
        # sent again by every sweep (that flooded the queue with copies faster than the
        # workers could drop them). Sent in chunks, one task each, as a bulk batch sends them.
        # (Not `processing` rows: one of those is claimable because its stamp is old.)
        db.session.execute(update(model).where(model.id.in_(ids), model.status.in_(
            (DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)))
                           .values(dispatched_at=now)
                           .execution_options(synchronize_session=False))
        db.session.commit()
        for start in range(0, len(ids), SWEEP_CHUNK):
            send_many(model, ids[start:start + SWEEP_CHUNK])
        counts[model.__tablename__] = len(ids)
    return counts


def manual_queue(query_for_orders):
    """Cancellations needing a person: failed refunds/notices, stock to reconcile."""
    return db.session.scalars(
        query_for_orders(select(Cancellation).join(Order)).where(or_(
            Cancellation.flag_manual_refund, Cancellation.flag_manual_notification,
            Cancellation.flag_inventory_reconciliation))
        .order_by(Cancellation.created_at.desc())).all()
