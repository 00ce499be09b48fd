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
from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from cancellation.adapters import DeliveryError, OutcomeUnknown, notifier, payment_gateway
from cancellation.audit import SYSTEM, record, record_each
from cancellation.errors import DeliveryClaimed, InvalidState, NotFound
from models import (
    Cancellation,
    CancellationItem,
    Notification,
    Order,
    Payment,
    Product,
    Refund,
    Store,
    db,
    money,
    utcnow,
)
from models.delivery import DeliveryStatus

log = logging.getLogger(__name__)

RETRYABLE = (DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)
TASKS = {Refund: "cancel_desk.deliver_refund", Notification: "cancel_desk.deliver_notification"}
ROWS_TASK = "cancel_desk.deliver_outbox"  # a cancellation's refunds and notices, in one task
BATCH_TASKS = {Refund: "cancel_desk.deliver_refunds",
               Notification: "cancel_desk.deliver_notifications"}
FLAGS = {Refund: "flag_manual_refund", Notification: "flag_manual_notification"}


def hand_to_workers(task, row_id, countdown=None, *, args=None):
    """Queue `task(row_id)` (or `task(*args)`). The rows it works on are already committed, so a
    broker outage is logged, not raised: the periodic sweeps send them again later."""
    args = [row_id] if args is None else list(args)
    try:
        # ignore_result: nobody waits for what these tasks return (they store none), so the
        # sender need not subscribe to a result channel per task, as Celery otherwise does.
        current_app.extensions["celery"].send_task(task, args=args, countdown=countdown,
                                                   ignore_result=True)
    except Exception:  # noqa: BLE001 - the row is safe in the database; a sweep re-dispatches
        log.warning("could not dispatch %s%r; the sweep will retry", task, tuple(args),
                    exc_info=True)


def send(model, row_id, countdown=None):
    """Hand a refund or notification row to the workers."""
    hand_to_workers(TASKS[model], row_id, countdown)


def send_many(model, row_ids):
    """Hand many refunds or notifications to the workers as one task (a bulk job's batch)."""
    hand_to_workers(BATCH_TASKS[model], list(row_ids))


def send_rows(refund_ids=(), notification_ids=()):
    """Hand the outbox rows a cancellation (or a batch of them) wrote to the workers as ONE task,
    refunds and notices together: one message, one claim, one settle, one audit append."""
    refund_ids, notification_ids = list(refund_ids), list(notification_ids)
    if refund_ids or notification_ids:
        hand_to_workers(ROWS_TASK, None, args=[refund_ids, notification_ids])


def deliver_many(model, row_ids):
    """Worker side of `send_many`: each row is claimed and delivered exactly as on its own."""
    if model is Refund:
        return deliver_rows(row_ids, ())
    return deliver_rows((), row_ids)


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


# --- the worker side: claim, deliver, settle ---------------------------------------------------

# Rows claimed, delivered and settled together. Small enough that the last row of a chunk is
# delivered long before its claim could go stale (OUTBOX_STALE_SECONDS) however slow the far
# side is; a cancellation's refund and notice always fit in one.
DELIVERY_CHUNK = 20
ACTIONS = {Refund: ("refund.succeeded", "refund.failed"),
           Notification: ("notification.sent", "notification.failed")}


def deliver_rows(refund_ids=(), notification_ids=()):
    """Deliver refunds and notices (a cancellation's, a batch's): per chunk, every claimable row
    is claimed in one statement per kind (a compare-and-set, as `_take` does it for one row) and
    committed; each claimed row is handed to its adapter; then every outcome is written in one
    transaction — each row a compare-and-set on the attempt this worker claimed, so a row taken
    over meanwhile keeps the other worker's outcome — with one append of the audit events.
    Returns "succeeded", "failed" or "nothing_to_do" per row, refunds first."""
    keys = [(Refund, row_id) for row_id in refund_ids] + \
           [(Notification, row_id) for row_id in notification_ids]
    outcomes = {}
    for start in range(0, len(keys), DELIVERY_CHUNK):
        outcomes.update(_deliver_chunk(keys[start:start + DELIVERY_CHUNK]))
    return [outcomes.get(key, "nothing_to_do") for key in keys]


def _deliver_chunk(keys):
    claimed = _claim_rows(keys)
    if not claimed:
        return {}
    done, unexpected = [], None
    for claim in claimed:
        try:
            done.append((claim, _deliver_claimed(claim)))
        except DeliveryError as exc:
            done.append((claim, exc))
        except Exception as exc:  # noqa: BLE001 - settle the others, then fail the task
            # This row stays `processing` until its claim goes stale; the sweep sends it again.
            log.exception("%s %s: delivery raised; left for the sweep", claim.model.__name__,
                          claim.id)
            unexpected = unexpected or exc
    outcomes, retries = _settle_rows(done)
    for model, row_id, delay in retries:
        send(model, row_id, countdown=delay)
    if unexpected is not None:
        raise unexpected
    return outcomes


class _Claim:
    """A row this worker claimed, with what delivering it needs (read in the claiming
    statement)."""

    __slots__ = ("model", "id", "attempt", "order_id", "cancellation_id", "amount_cents",
                 "method", "payment_reference", "recipient", "template", "idempotency_key",
                 "number", "store_id", "store", "balance_due", "kind", "refund_cents", "flag",
                 "lines", "refunds")

    def __init__(self, model, values):
        self.model = model
        self.lines, self.refunds = [], []
        for name in self.__slots__[1:]:
            if name not in ("lines", "refunds"):
                setattr(self, name, values.get(name))


def _claim_rows(keys):
    """Claim the claimable rows among `keys` [(model, id)]: [_Claim], refunds first, committed."""
    now = utcnow()
    params = {"now": now, "stale": _stale_before(now),
              "max_attempts": current_app.config["DELIVERY_MAX_ATTEMPTS"]}
    claimed = []
    for model in (Refund, Notification):
        ids = sorted({row_id for kind, row_id in keys if kind is model})
        if ids:
            returned = db.session.execute(_statements(model)["claim"], {**params, "ids": ids})
            claimed += sorted((_Claim(model, row) for row in returned.mappings()),
                              key=lambda c: c.id)
    notices = sorted({c.cancellation_id for c in claimed
                      if c.model is Notification and c.cancellation_id is not None})
    if notices:
        lines, refunds = {}, {}
        for cancellation_id, quantity, name in db.session.execute(_lines_statement(),
                                                                  {"ids": notices}):
            lines.setdefault(cancellation_id, []).append((quantity, name))
        for cancellation_id, method, cents in db.session.execute(_refunds_statement(),
                                                                 {"ids": notices}):
            refunds.setdefault(cancellation_id, []).append((method, int(cents)))
        stores = dict(db.session.execute(select(Store.id, Store.name).where(Store.id.in_(
            {c.store_id for c in claimed if c.model is Notification}))).all())
        for claim in claimed:
            if claim.model is Notification:
                claim.lines = lines.get(claim.cancellation_id, [])
                claim.refunds = refunds.get(claim.cancellation_id, [])
                claim.store = stores.get(claim.store_id)
    db.session.commit()
    return claimed


_STATEMENTS = {}


def _statements(model):
    """The claim and settle statements of a model, built once (Core, on its table): what the
    worker runs for every delivery, with only the values bound."""
    built = _STATEMENTS.get(model)
    if built is None:
        table, cancellations, orders = (model.__table__, Cancellation.__table__,
                                        Order.__table__)
        claimable = or_(
            table.c.status == DeliveryStatus.PENDING.value,
            and_(table.c.status == DeliveryStatus.FAILED.value,
                 table.c.attempts < bindparam("max_attempts"),
                 table.c.next_attempt_at.is_not(None), table.c.next_attempt_at <= bindparam("now")),
            and_(table.c.status == DeliveryStatus.PROCESSING.value,
                 or_(table.c.dispatched_at.is_(None),
                     table.c.dispatched_at < bindparam("stale"))))

        def of_order(column, label):
            return select(column).where(orders.c.id == table.c.order_id) \
                .scalar_subquery().label(label)

        def of_cancellation(column, label):
            return select(column).where(cancellations.c.id == table.c.cancellation_id) \
                .scalar_subquery().label(label)

        payments = Payment.__table__
        extra = ((table.c.amount_cents, table.c.method,
                  select(payments.c.processor_reference)
                  .where(payments.c.id == table.c.payment_id)
                  .scalar_subquery().label("payment_reference")) if model is Refund
                 else (table.c.recipient, table.c.template,
                       of_order(orders.c.balance_due_cents, "balance_due")))
        built = _STATEMENTS[model] = {
            # A compare-and-set like `_take`'s: the row's state is checked by the UPDATE itself,
            # so of two claimers (two workers, or a worker and the sweep) one takes each row.
            "claim": update(table)
            .where(table.c.id.in_(bindparam("ids", expanding=True)), claimable)
            .values(status=DeliveryStatus.PROCESSING.value, attempts=table.c.attempts + 1,
                    dispatched_at=bindparam("now"), next_attempt_at=None)
            .returning(table.c.id, table.c.attempts.label("attempt"), table.c.order_id,
                       table.c.cancellation_id, table.c.idempotency_key, *extra,
                       of_order(orders.c.number, "number"),
                       of_order(orders.c.store_id, "store_id"),
                       of_cancellation(cancellations.c.kind, "kind"),
                       of_cancellation(cancellations.c.refund_cents, "refund_cents"),
                       of_cancellation(cancellations.c[FLAGS[model]], "flag")),
            "flag": update(cancellations).where(cancellations.c.id == bindparam("b_id"))
            .values({FLAGS[model]: bindparam("b_value")}),
        }
    return built


def _lines_statement():
    built = _STATEMENTS.get("lines")
    if built is None:
        items, products = CancellationItem.__table__, Product.__table__
        built = _STATEMENTS["lines"] = (
            select(items.c.cancellation_id, items.c.quantity, products.c.name)
            .join(products, products.c.id == items.c.product_id)
            .where(items.c.cancellation_id.in_(bindparam("ids", expanding=True)))
            .order_by(items.c.id))
    return built


def _refunds_statement():
    """What each cancellation refunds per tender (the customer's notice says where it goes)."""
    built = _STATEMENTS.get("refunds")
    if built is None:
        refunds = Refund.__table__
        built = _STATEMENTS["refunds"] = (
            select(refunds.c.cancellation_id, refunds.c.method, func.sum(refunds.c.amount_cents))
            .where(refunds.c.cancellation_id.in_(bindparam("ids", expanding=True)),
                   refunds.c.status != DeliveryStatus.VOIDED.value)
            .group_by(refunds.c.cancellation_id, refunds.c.method)
            .order_by(refunds.c.cancellation_id, refunds.c.method))
    return built


def _settle_statement(model, values):
    """UPDATE of one claimed row to its outcome, only while this worker's claim holds (still
    `processing`, at the attempt it claimed); built once per model and set of columns."""
    key = (model, tuple(values))
    built = _STATEMENTS.get(key)
    if built is None:
        table = model.__table__
        built = _STATEMENTS[key] = (
            update(table).where(table.c.id == bindparam("b_id"),
                                table.c.attempts == bindparam("b_attempt"),
                                table.c.status == DeliveryStatus.PROCESSING.value)
            .values({name: bindparam(f"b_{name}") for name in values}))
    return built


def _deliver_claimed(claim):
    """Call the far side for one claimed row: (values to write, audit details)."""
    if claim.model is Refund:
        reference = payment_gateway().refund(
            idempotency_key=claim.idempotency_key, amount_cents=claim.amount_cents,
            order_number=claim.number, tender=claim.method or "card",
            payment_reference=getattr(claim, "payment_reference", None), attempt=claim.attempt)
        return ({"gateway_reference": reference, "succeeded_at": utcnow()},
                {"amount": money(claim.amount_cents), "reference": reference})
    subject, body = _message(claim.number, claim.kind, claim.refund_cents, claim.lines,
                             template=claim.template, refunds=claim.refunds, store=claim.store,
                             balance_due=claim.balance_due or 0)
    notifier().send(idempotency_key=claim.idempotency_key, recipient=claim.recipient,
                    subject=subject, body=body)
    return {"sent_at": utcnow()}, {"template": claim.template}


def _settle_rows(done):
    """Write how each claimed delivery went, in one transaction: ({(model, id): outcome},
    [(model, id, back-off seconds)] to send again)."""
    outcomes, retries, events, flags = {}, [], [], {}
    max_attempts = current_app.config["DELIVERY_MAX_ATTEMPTS"]
    for claim, result in done:
        model, succeeded = claim.model, not isinstance(result, DeliveryError)
        if succeeded:
            values, after = result
            values = {"status": DeliveryStatus.SUCCEEDED.value, "last_error": None,
                      "next_attempt_at": None, **values}
            if model is Refund:
                values["outcome_unknown"] = False
        else:
            delay = next_attempt_at = None
            if claim.attempt < max_attempts:
                delay = backoff_seconds(claim.attempt)
                next_attempt_at = utcnow() + timedelta(seconds=delay)
            last_error = str(result)[:500]
            values = {"status": DeliveryStatus.FAILED.value, "last_error": last_error,
                      "next_attempt_at": next_attempt_at}
            if model is Refund:  # sent, answer lost: the processor may have paid it
                values["outcome_unknown"] = isinstance(result, OutcomeUnknown)
            after = {"error": last_error, "next_attempt_in_s": delay}
        # Compare-and-set on `processing` and the attempt this worker claimed: False when the
        # claim went stale and another worker took the row over; its outcome stands.
        settled = db.session.execute(
            _settle_statement(model, values),
            {"b_id": claim.id, "b_attempt": claim.attempt,
             **{f"b_{name}": value for name, value in values.items()}}).rowcount
        if not settled:
            log.warning("%s %s was taken over while this worker delivered it; its outcome "
                        "stands", model.__name__, claim.id)
            outcomes[(model, claim.id)] = "nothing_to_do"
            continue
        outcomes[(model, claim.id)] = "succeeded" if succeeded else "failed"
        if not succeeded and delay is not None:
            retries.append((model, claim.id, delay))
        if claim.cancellation_id is not None:
            flags[(model, claim.cancellation_id)] = (not succeeded, claim.flag)
        events.append({"action": ACTIONS[model][0 if succeeded else 1],
                       "target_type": model.__name__.lower(), "target_id": claim.id,
                       "order_id": claim.order_id, "store_id": claim.store_id,
                       "after": {"attempts": claim.attempt, **after}})
    # The manual-handling flag follows the last outcome; written only where it changes.
    for (model, cancellation_id), (value, was) in flags.items():
        if bool(was) != value:
            db.session.execute(_statements(model)["flag"],
                               {"b_id": cancellation_id, "b_value": value})
    record_each(None, events, context=SYSTEM)
    db.session.commit()
    return outcomes, retries


def deliver_refund(refund_id):
    """Pay one refund through the gateway. Returns succeeded, failed or nothing_to_do."""
    return deliver_rows([refund_id], ())[0]


def deliver_notification(notification_id):
    return deliver_rows((), [notification_id])[0]


def notification_message(notification):
    """Subject and body: order number, items and amounts only — no other customer data."""
    cancellation = db.session.get(Cancellation, notification.cancellation_id) \
        if notification.cancellation_id else None
    order = notification.order
    return _message(order.number, cancellation.kind if cancellation else None,
                    cancellation.refund_cents if cancellation else 0,
                    [(ci.quantity, ci.product.name) for ci in (cancellation.items
                                                               if cancellation else [])],
                    template=notification.template,
                    refunds=sorted(cancellation.refund_shares() if cancellation else []),
                    store=order.store.name if order.store else None,
                    balance_due=order.balance_due_cents)


# Where each tender's refund reaches the customer, as their notice says it.
HOW_REFUNDED = {
    "card": "A refund of ${amount} is on its way to the card you paid with.",
    "debit": "A refund of ${amount} is on its way to the debit account you paid with.",
    "cash": ("A cash refund of ${amount} is waiting for you at {store}: collect it at the "
             "counter (bring a photo ID)."),
    "store_credit": "${amount} was added to your store credit at {store}.",
}


def _message(number, kind, refund, lines, *, template=None, refunds=(), store=None,
             balance_due=0):
    store = store or "the store"
    if template == "order_reinstated":
        body = [f"Your order {number} was reinstated: it is open again.", ""]
        if balance_due:
            body.append(f"Money for it had already gone back to you, so ${money(balance_due)} "
                        f"is due: please pay it when you collect your order at {store}.")
        else:
            body.append("Any refund that had not gone out yet was cancelled; nothing is due.")
        body += ["", "Questions? Reply to this message or call the store."]
        return f"Your order {number} is back", "\n".join(body)
    partial = kind == "partial"
    subject = (f"Items removed from your order {number}" if partial
               else f"Your order {number} has been cancelled")
    body = [f"{'Some items of' if partial else 'Your'} order {number} "
            f"{'were' if partial else 'was'} cancelled.", "", "Cancelled items:",
            *(f"  {quantity} x {name}" for quantity, name in lines)]
    if refunds:
        body.append("")
        body += [HOW_REFUNDED.get(method, HOW_REFUNDED["card"]).format(
            amount=money(cents), store=store) for method, cents in refunds if cents]
    elif refund:
        body += ["", f"A refund of ${money(refund)} is on its way to your original payment "
                 "method."]
    body += ["", "Questions? Reply to this message or call the store."]
    return subject, "\n".join(body)


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
    if row.status == DeliveryStatus.AWAITING_PAYOUT.value:
        raise InvalidState("This is a cash refund: it is paid out at the counter, not sent. "
                           "Confirm it on the Cash refunds page once it is handed over.")
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
