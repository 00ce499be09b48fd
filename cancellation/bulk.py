"""Bulk cancellation (seed A1): one job over many orders, run by the workers as a Celery chord.

- `submit` validates, writes the BulkJob and one BulkJobItem per requested order, and hands the
  work to the workers: a chord whose header is one task per batch of items and whose callback
  finalizes the job.
- `run_batch` (a header task) cancels the orders of its batch together, in one transaction
  (cancellation/batch.py): the same `evaluate_cancel` as a single cancel decides for each order,
  and each table's rows are written once for the whole batch. The items' statuses change in that
  same transaction, so progress is exactly what has been committed. A business failure (another
  store's order, a billing hold, ...) is recorded on its item with its error code and the others
  go on; the task never raises for one, because a raising header task makes Celery skip the
  chord callback. When the database refuses anything in the batch (a constraint, a trigger, a
  deadlock) the batch is rolled back and its orders are cancelled one transaction each (the same
  writer, one order at a time), so that the one bad order fails alone.
- Everything is safe to run twice (Celery delivers at least once): items are claimed with a
  conditional UPDATE as the first statement of their transaction, so a redelivered or duplicated
  batch skips the orders already done, and a worker killed mid-batch leaves its orders untouched
  and their items pending.
- `finish` settles the job from the database; the chord callback, the last batch and the
  watchdog may all call it, and only the first one to find no pending item does anything.
- `watchdog` (Celery beat) re-dispatches the pending items of a job that stopped moving: a worker
  killed mid-batch, a Redis restart that lost the queue or the chord's counter.
"""
import logging
from datetime import timedelta

from celery import chord, group
from flask import current_app
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm.exc import StaleDataError

from cancellation import batch, maintenance, oversight
from cancellation.audit import AuditContext, record
from cancellation.errors import (
    CancelDeskError,
    Forbidden,
    InvalidState,
    NotFound,
    RetryInProgress,
    ValidationFailed,
)
from cancellation.locks import lock_order
from cancellation.policy import can, evaluate_cancel
from cancellation.service import CancelRequest, file_approval_request, perform
from models import BulkJob, BulkJobItem, Setting, User, db, isoformat, utcnow
from models.bulk import FINISHED_JOB_STATUSES, BulkItemStatus, BulkJobStatus

log = logging.getLogger(__name__)

BATCH_TASK = "cancel_desk.bulk_batch"
FINISH_TASK = "cancel_desk.bulk_finish"
PENDING, SUCCEEDED, FAILED = (BulkItemStatus.PENDING.value, BulkItemStatus.SUCCEEDED.value,
                              BulkItemStatus.FAILED.value)
RUNNING, QUEUED = BulkJobStatus.RUNNING.value, BulkJobStatus.QUEUED.value
PAUSED = "paused"
DB_ATTEMPTS = 3  # a deadlock or serialization failure is retried before the item fails


# --- Submitting --------------------------------------------------------------------------------

def submit(actor, order_ids, request, context, retry_of=None):
    """Check the request, write the job and its items, dispatch it. Returns the BulkJob.

    Which orders may be cancelled is decided per order by the workers, under each order's lock:
    an order of another store, or one that cannot be cancelled, becomes a failed item with its
    code; it never fails the whole request.
    """
    if not can(actor, "bulk_cancel"):
        raise Forbidden("You do not have permission to cancel orders in bulk.")
    if request.scope != "this_instance":
        raise ValidationFailed("A bulk cancellation cancels exactly the selected orders; "
                               "scope must be this_instance.")
    request.validate()
    ids = list(dict.fromkeys(order_ids))  # duplicates dropped, the first position kept
    limit = current_app.config["BULK_MAX_ORDERS"]
    if not ids:
        raise ValidationFailed("Select at least one order.")
    if len(ids) > limit:
        raise ValidationFailed(f"A bulk job takes at most {limit} orders; split the selection.")
    queued = maintenance.is_on()
    job = BulkJob(user_id=actor.id, reason=request.reason, notes=request.notes,
                  notify_customer=request.notify_customer, total=len(ids),
                  status=QUEUED if queued else RUNNING, source=context.source,
                  request_id=context.request_id, ip=context.ip,
                  retry_of_id=retry_of.id if retry_of else None, created_at=utcnow(),
                  started_at=None if queued else utcnow())
    db.session.add(job)
    db.session.flush()
    db.session.execute(insert(BulkJobItem), [
        {"job_id": job.id, "order_id": order_id, "status": PENDING, "attempts": 0}
        for order_id in ids])
    record(actor, "bulk.submitted", target_type="bulk_job", target_id=job.id,
           after={"orders": len(ids), "reason": request.reason, "notes": request.notes,
                  "status": job.status, "retry_of": job.retry_of_id}, context=context)
    db.session.commit()
    if not queued:
        dispatch(job.id)
    return job


def retry_failed(job, actor, context, notes=None):
    """A new job over the orders that failed in `job` (the failed items stay as they were).

    Refused (409 `bulk_retry_in_progress`) while an earlier retry of `job` is still queued or
    running: of two clicks at once, exactly one starts a retry. The check runs under the job's
    row lock — taken by a write, the first statement of the transaction, because SQLite ignores
    FOR UPDATE and locks the database on a transaction's first write — and the retry is written
    in the same transaction, so the second click reads the first one's retry.
    """
    if not job.is_finished:
        raise InvalidState("The job is still running; retry its failures when it has finished.")
    locked = db.session.execute(
        update(BulkJob).where(BulkJob.id == job.id, BulkJob.status.in_(FINISHED_JOB_STATUSES))
        .values(status=BulkJob.status).execution_options(synchronize_session=False)).rowcount
    if not locked:
        db.session.rollback()
        raise InvalidState("The job is still running; retry its failures when it has finished.")
    running = db.session.scalar(select(BulkJob.id).where(
        BulkJob.retry_of_id == job.id, BulkJob.status.in_((RUNNING, QUEUED)))
        .order_by(BulkJob.id).limit(1))
    if running is not None:
        db.session.rollback()
        raise RetryInProgress(
            f"The failures of bulk cancellation #{job.id} are being retried by bulk "
            f"cancellation #{running}; wait for it to finish.", details={"retry_job_id": running})
    order_ids = db.session.scalars(select(BulkJobItem.order_id).where(
        BulkJobItem.job_id == job.id, BulkJobItem.status == FAILED)
        .order_by(BulkJobItem.id)).all()
    if not order_ids:
        db.session.rollback()
        raise InvalidState("No order failed in this job; there is nothing to retry.")
    request = CancelRequest(reason=job.reason, notes=notes or job.notes,
                            notify_customer=job.notify_customer)
    try:
        return submit(actor, order_ids, request, context, retry_of=job)
    except Exception:
        db.session.rollback()
        raise


def dispatch(job_id, item_ids=None, as_chord=True):
    """Hand the job's pending items to the workers, a batch per task.

    The first dispatch is a chord (the callback finalizes the job); a watchdog re-dispatch sends
    plain batches, each of which finalizes the job when it finds nothing left to do.
    """
    if item_ids is None:
        item_ids = db.session.scalars(select(BulkJobItem.id).where(
            BulkJobItem.job_id == job_id, BulkJobItem.status == PENDING)
            .order_by(BulkJobItem.id)).all()
    db.session.execute(update(BulkJob).where(BulkJob.id == job_id)
                       .values(dispatched_at=utcnow()))
    db.session.commit()
    size = current_app.config["BULK_BATCH_SIZE"]
    celery = current_app.extensions["celery"]
    batches = [celery.signature(BATCH_TASK, args=[job_id, item_ids[i:i + size]])
               for i in range(0, len(item_ids), size)]
    try:
        if not batches:
            celery.send_task(FINISH_TASK, args=[job_id])
        elif as_chord:
            chord(batches)(celery.signature(FINISH_TASK, args=[job_id], immutable=True))
        else:
            group(batches).apply_async()
    except Exception:  # noqa: BLE001 - the items are safe in the database; the watchdog resends
        log.warning("could not dispatch bulk job %s; the watchdog will retry", job_id,
                    exc_info=True)
    return len(batches)


# --- Working (worker side) ---------------------------------------------------------------------

def run_batch(job_id, item_ids):
    """Cancel the orders of one batch, each in its own transaction. Never raises for an order."""
    job = db.session.get(BulkJob, job_id)
    if job is None or job.status != RUNNING:
        db.session.rollback()
        return {"job_id": job_id, "skipped": len(item_ids)}
    # The actor, loaded once with their stores and detached, so that no commit expires it and
    # makes each order of the batch read it again.
    actor = db.session.get(User, job.user_id)
    for store in actor.stores:  # detached too: store_ids must not re-read them after a commit
        db.session.expunge(store)
    db.session.expunge(actor)
    context = AuditContext(request_id=job.request_id, ip=job.ip, source="bulk")
    request = CancelRequest(reason=job.reason, notes=job.notes,
                            notify_customer=job.notify_customer)
    db.session.rollback()  # each order gets a fresh transaction of its own
    with Setting.snapshot():  # thresholds read once per batch, not once per order
        if maintenance.is_on():  # maintenance began: the batch waits, pending, for its end
            pause(job_id)
            return {"job_id": job_id, "paused": len(item_ids)}
        together = _cancel_together(item_ids, actor, request, context)
        if together is not None:
            done = {SUCCEEDED: together.succeeded, FAILED: together.failed,
                    "skipped": together.skipped}
        else:  # the database refused the batch: each order in its own transaction
            done = _cancel_one_by_one(job_id, item_ids, actor, request, context)
    # (Refunds and customer notices went to the workers with each commit: one task per kind
    # for a batch done together.)
    finish(job_id)
    return {"job_id": job_id, **done}


def _cancel_together(item_ids, actor, request, context):
    """The batch in one transaction (cancellation/batch.py); None when anything in it failed
    (the database refused a change, or an error), with everything rolled back."""
    def file_approval(order, why):
        return file_approval_request(order, actor, request, why, context)

    try:
        result = batch.cancel_together(item_ids, actor, request, context, file_approval)
        db.session.commit()
        return result
    except Exception:  # noqa: BLE001 - one order at a time finds (and fails) the order at fault
        db.session.rollback()
        log.warning("bulk batch of %s items not done together; one order at a time",
                    len(item_ids), exc_info=True)
        return None


def _cancel_one_by_one(job_id, item_ids, actor, request, context):
    """Each order in its own transaction, so that the one the database refuses fails alone."""
    done = {SUCCEEDED: 0, FAILED: 0, "skipped": 0}
    for item_id in item_ids:
        outcome, _cancelled = cancel_item(item_id, actor, request, context)
        if outcome == PAUSED:
            pause(job_id)
            break
        done[outcome] += 1
    return done


def cancel_item(item_id, actor, request, context):
    """One order, one transaction: claim the item, cancel the order, record the outcome.

    Returns (succeeded | failed | skipped | paused, (cancellation id, store id) or None).
    """
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return _cancel_item_once(item_id, actor, request, context)
        except (StaleDataError, SQLAlchemyError) as exc:
            db.session.rollback()
            if attempt < DB_ATTEMPTS and _is_transient(exc):
                continue
            log.warning("bulk item %s: database error", item_id, exc_info=True)
            return _fail_item(item_id, "database_error",
                              "The database refused this order's changes; nothing was changed. "
                              "Retry it, or cancel it on its own."), None
    return "skipped", None  # not reached


def _cancel_item_once(item_id, actor, request, context):
    # The claim is the transaction's first statement: it takes the item's row lock (the whole
    # database's write lock on SQLite), so of two deliveries of the same batch only one works
    # on an order; the other finds the item no longer pending and skips it.
    order_id = db.session.execute(
        update(BulkJobItem).where(BulkJobItem.id == item_id, BulkJobItem.status == PENDING)
        .values(attempts=BulkJobItem.attempts + 1).returning(BulkJobItem.order_id)
        .execution_options(synchronize_session=False)).scalar()
    if order_id is None:
        db.session.rollback()
        return "skipped", None
    try:
        order = lock_order(order_id)
        decision = evaluate_cancel(actor, order, reason=request.reason)
        if decision.needs_approval:
            approval = file_approval_request(order, actor, request, decision.why, context)
            raise InvalidState(
                f"Needs approval ({'; '.join(decision.why)}): approval request "
                f"#{approval.id} was filed for it.", code="approval_required")
        done = perform(order, actor, request, context)
    except maintenance.MaintenanceInProgress:
        db.session.rollback()  # not a failure of this order: it is done after maintenance
        return PAUSED, None
    except CancelDeskError as exc:
        # Only checks ran (or an approval request was filed): record why and go on.
        _set_item(item_id, FAILED, error_code=exc.code, error_message=exc.message)
        db.session.commit()  # an approval request filed above is routed after this commit
        return FAILED, None
    _set_item(item_id, SUCCEEDED, cancellation_id=done.cancellation_id)
    db.session.commit()
    return SUCCEEDED, (done.cancellation_id, done.store_id)


def _set_item(item_id, status, **values):
    db.session.execute(update(BulkJobItem).where(BulkJobItem.id == item_id)
                       .values(status=status, finished_at=utcnow(), **values)
                       .execution_options(synchronize_session=False))


def _fail_item(item_id, code, message):
    """Record a failure in a transaction of its own (the order's one was rolled back)."""
    try:
        db.session.execute(update(BulkJobItem).where(BulkJobItem.id == item_id,
                                                     BulkJobItem.status == PENDING)
                           .values(status=FAILED, error_code=code, error_message=message,
                                   finished_at=utcnow(), attempts=BulkJobItem.attempts + 1)
                           .execution_options(synchronize_session=False))
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()  # the item stays pending; the watchdog will try it again
        log.warning("bulk item %s: could not record the failure", item_id, exc_info=True)
        return "skipped"
    return FAILED


def _is_transient(exc):
    """Deadlocks, serialization failures, a stale version, a dropped connection: worth another
    try. Anything else (a constraint, a trigger refusing the change) fails the item."""
    if isinstance(exc, StaleDataError):
        return True
    if getattr(exc, "connection_invalidated", False):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01", "55P03")


# --- Finishing and watching --------------------------------------------------------------------

def counts(job_id):
    rows = db.session.execute(select(BulkJobItem.status, func.count()).where(
        BulkJobItem.job_id == job_id).group_by(BulkJobItem.status)).all()
    found = {PENDING: 0, SUCCEEDED: 0, FAILED: 0}
    found.update(dict(rows))
    return found


def finish(job_id):
    """Settle a running job whose items are all done. Idempotent; returns the job's status."""
    found = counts(job_id)
    if found[PENDING]:
        db.session.rollback()
        return RUNNING
    if not found[FAILED]:
        status = BulkJobStatus.COMPLETED.value
    elif found[SUCCEEDED]:
        status = BulkJobStatus.COMPLETED_WITH_ERRORS.value
    else:
        status = BulkJobStatus.FAILED.value
    settled = db.session.execute(
        update(BulkJob).where(BulkJob.id == job_id, BulkJob.status == RUNNING)
        .values(status=status, succeeded=found[SUCCEEDED], failed=found[FAILED],
                finished_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if settled:
        job = db.session.get(BulkJob, job_id)
        context = AuditContext(request_id=job.request_id, ip=job.ip, source="bulk")
        record(job.user, "bulk.finished", target_type="bulk_job", target_id=job_id,
               after={"status": status, "succeeded": found[SUCCEEDED], "failed": found[FAILED]},
               context=context)
        db.session.commit()
        check_for_abuse(job, context)
        return status
    db.session.commit()
    return db.session.scalar(select(BulkJob.status).where(BulkJob.id == job_id))


def check_for_abuse(job, context):
    """Unusual cancelling is flagged once per finished job and store — not once per batch:
    the monitor's counts grow with the job, and the job is one decision of one person."""
    from models import Order

    store_ids = db.session.scalars(
        select(Order.store_id).join(BulkJobItem, BulkJobItem.order_id == Order.id)
        .where(BulkJobItem.job_id == job.id, BulkJobItem.status == SUCCEEDED)
        .distinct().order_by(Order.store_id)).all()
    for store_id in store_ids:
        oversight.after_cancellations(job.user, store_id, context)


def watchdog(stall_seconds):
    """Beat task: start queued jobs once maintenance is over, finish jobs with nothing left,
    and re-dispatch the pending items of jobs that made no progress for `stall_seconds`."""
    now = utcnow()
    report = {"started": 0, "finished": 0, "redispatched": 0}
    if not maintenance.is_on(fresh=True):
        report["started"] = start_queued()
    jobs = db.session.execute(select(BulkJob.id, BulkJob.dispatched_at, BulkJob.redispatches)
                              .where(BulkJob.status == RUNNING)).all()
    db.session.rollback()
    for job_id, dispatched_at, redispatches in jobs:
        if not counts(job_id)[PENDING]:
            finish(job_id)
            report["finished"] += 1
            continue
        last = db.session.scalar(select(func.max(BulkJobItem.finished_at)).where(
            BulkJobItem.job_id == job_id))
        moved = max(filter(None, (last, dispatched_at)), default=None)
        db.session.rollback()
        # The wait doubles with each re-dispatch (up to 32 times): a job whose batches are only
        # queued behind other work is not flooded with copies of them.
        patience = timedelta(seconds=stall_seconds * 2 ** min(redispatches, 5))
        if moved is None or moved < now - patience:
            log.warning("bulk job %s made no progress since %s; re-dispatching its pending "
                        "items", job_id, isoformat(moved))
            db.session.execute(update(BulkJob).where(BulkJob.id == job_id)
                               .values(redispatches=BulkJob.redispatches + 1))
            dispatch(job_id, as_chord=False)
            report["redispatched"] += 1
    return report


def pause(job_id):
    """Maintenance began while the job ran: back to queued; `start_queued` resumes it."""
    db.session.execute(update(BulkJob).where(BulkJob.id == job_id, BulkJob.status == RUNNING)
                       .values(status=QUEUED).execution_options(synchronize_session=False))
    db.session.commit()


def start_queued():
    """Start the jobs accepted during maintenance, oldest first. Safe with several workers:
    each job is moved from queued to running by one conditional UPDATE."""
    ids = db.session.scalars(select(BulkJob.id).where(BulkJob.status == QUEUED)
                             .order_by(BulkJob.id)).all()
    db.session.rollback()
    started = 0
    for job_id in ids:
        moved = db.session.execute(
            update(BulkJob).where(BulkJob.id == job_id, BulkJob.status == QUEUED)
            .values(status=RUNNING, started_at=utcnow())
            .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        if moved:
            dispatch(job_id)
            started += 1
    return started


# --- Reading -----------------------------------------------------------------------------------

def visible_job(user, job_id):
    """The job if `user` started it or is an admin; else NotFound (as for another store's order)."""
    job = db.session.get(BulkJob, job_id)
    if job is None or not (job.user_id == user.id or can(user, "administer")):
        raise NotFound("Bulk job not found.")
    return job


def job_status(job, page=1, per_page=500):
    """What GET /api/v1/bulk_jobs/:id and the job page show: live counts, then the items with
    the failed ones first."""
    if job.is_finished:
        found = {PENDING: 0, SUCCEEDED: job.succeeded, FAILED: job.failed}
    else:
        found = counts(job.id)
    body = {
        "id": job.id, "status": job.status, "total": job.total,
        "processed": found[SUCCEEDED] + found[FAILED], "succeeded": found[SUCCEEDED],
        "failed": found[FAILED], "pending": found[PENDING],
        # Rounded down: 100 only when nothing is left.
        "percent": (100 * (found[SUCCEEDED] + found[FAILED]) // job.total) if job.total else 100,
        "reason": job.reason, "notes": job.notes, "notify_customer": job.notify_customer,
        "retry_of": job.retry_of_id, "created_at": isoformat(job.created_at),
        "started_at": isoformat(job.started_at), "finished_at": isoformat(job.finished_at),
        "page": page, "per_page": per_page, "items": [],
    }
    if per_page:
        body["items"] = [item_dict(item) for item in job_items(job, page, per_page)]
    return body


def job_items(job, page, per_page):
    """A page of the job's items, failed first. The order number is shown only for orders the
    job's owner may see: another store's order stays a bare id, as `not_found` says."""
    from models import Order

    failed_first = (BulkJobItem.status == FAILED).desc()
    pending_next = (BulkJobItem.status == PENDING).desc()
    rows = db.session.execute(
        select(BulkJobItem, Order.number, Order.store_id)
        .outerjoin(Order, Order.id == BulkJobItem.order_id)
        .where(BulkJobItem.job_id == job.id)
        .order_by(failed_first, pending_next, BulkJobItem.id)
        .limit(per_page).offset((page - 1) * per_page)).all()
    owner = job.user
    for item, number, store_id in rows:
        visible = number is not None and (owner.sees_every_store or store_id in owner.store_ids)
        item.order_number = number if visible else None
    return [item for item, _number, _store in rows]


def item_dict(item):
    return {"order_id": item.order_id, "order_number": getattr(item, "order_number", None),
            "status": item.status, "error": item.error_code, "message": item.error_message,
            "cancellation_id": item.cancellation_id, "finished_at": isoformat(item.finished_at)}


def running_jobs(user, limit=5):
    """The user's jobs still running or queued (the orders list links to them)."""
    return db.session.scalars(select(BulkJob).where(
        BulkJob.user_id == user.id, BulkJob.status.in_((RUNNING, QUEUED)))
        .order_by(BulkJob.id.desc()).limit(limit)).all()


__all__ = ["submit", "retry_failed", "dispatch", "run_batch", "finish", "watchdog",
           "start_queued", "visible_job", "job_status", "running_jobs", "counts"]
