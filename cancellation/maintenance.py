"""Maintenance mode (SPEC §2, seed "cancellation during system maintenance"): while it is on,
cancellations are accepted, stored as queued jobs, answered 202, and run when it ends.

What is held while it is on, and why — one rule: nothing changes an order, its stock or money.

* Cancels (panel, PUT /api/v1/orders/:id/status, POST /api/v2/orders/:id/cancel, and partial
  cancels through `partial.submit_items`) are *queued* by `queue_cancel`: the request is what
  the user decided, and it stays valid; it is checked in full (state, blockers, version,
  approval) when it runs, because the order may change meanwhile. At submit time only what
  cannot change is checked: the body, that the order is visible (404) and that the user may
  cancel at all (403). A CancelJob already handed to a worker when maintenance began goes back
  to the queue (`jobs.run_cancel_job`); bulk jobs are held by cancellation/bulk.py.
* Approving a request and reinstating an order are *refused* (503 `maintenance_mode`): both are
  decisions taken on the order as the person sees it now, and running them later on an order that
  may have changed is not what they decided. Nothing is lost — the approval request stays open
  (approve it again afterwards) and the reinstatement can be asked again. `service.perform` (every
  cancellation's way to the writer) and `reinstate.reinstate_order` refuse while maintenance is
  on, so no path slips through.
* Filing or rejecting an approval request, reading, previews and exports go on: they change no
  order, stock or money.

Turning maintenance off hands `release_queued` to the workers; a beat entry runs it periodically
too, so a lost message (or a switch made elsewhere) still gets the queue processed.
"""
import json
import logging

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cancellation.audit import record
from cancellation.locks import lock_order
from cancellation.policy import check_may_cancel, require_visible
from cancellation.switch import (  # is_on and the error: for this module's callers too
    SETTING,
    MaintenanceInProgress,
    _remember,
    is_on,
)
from models import CancelJob, Setting, db, utcnow
from models.setting import DEFAULTS

log = logging.getLogger(__name__)

QUEUED = "queued"
RELEASE_TASK = "cancel_desk.release_queued"
# One releaser at a time keeps the queue in creation order; claims keep it exactly-once anyway.
RELEASE_LOCK = "cancel_desk:maintenance:release"
RELEASE_LOCK_SECONDS = 300

def switch(actor, on, context):
    """Turn maintenance mode on or off (audited as `settings.maintenance_mode`). Returns whether
    it changed. Turning it off hands the queued cancellations to the workers."""
    on = bool(on)
    for attempt in (1, 2):  # the very first switch creates the row; two admins may race to
        try:
            # The row's lock, taken by a write as the transaction's first statement: SQLite
            # ignores FOR UPDATE and locks the database on a transaction's first write. Then of
            # two admins switching at once, the second reads what the first switched to.
            db.session.execute(update(Setting).where(Setting.key == SETTING)
                               .values(key=Setting.key)
                               .execution_options(synchronize_session=False))
            row = db.session.scalar(select(Setting).where(Setting.key == SETTING)
                                    .with_for_update()
                                    .execution_options(populate_existing=True))
            before = bool(DEFAULTS[SETTING] if row is None else row.value)
            changed = before != on
            if changed:
                Setting.put(SETTING, on)
                record(actor, "settings.maintenance_mode", target_type="setting",
                       target_id=SETTING, before={SETTING: before},
                       after={SETTING: on, "queued_cancellations": queued_count()},
                       context=context)
            db.session.commit()
            break
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise
        except Exception:
            db.session.rollback()
            raise
    _remember(on)
    if not on:
        hand_release_to_workers()
    return changed


def hand_release_to_workers():
    """Queue `release_queued` on a worker. A broker outage is logged, not raised: the beat
    re-checks periodically."""
    try:
        current_app.extensions["celery"].send_task(RELEASE_TASK)
    except Exception:  # noqa: BLE001 - the queue is safe in the database
        log.warning("could not dispatch %s; the periodic check will release the queue",
                    RELEASE_TASK, exc_info=True)


# --- queuing ---------------------------------------------------------------------------------

def queue_cancel(order_id, actor, request, context, items=None):
    """Store a cancel requested during maintenance as a queued CancelJob, and return it.

    Checked now: the request itself (400), the order is visible (404), the actor may cancel at
    all (403). Everything else is decided when the job runs. `items` (a partial cancel's
    [{"item_id", "quantity"}]) goes into the job's payload as "items", for `jobs.run_cancel_job`.
    The same user sending the same request again while theirs still waits (a double click, a
    client's retry) gets that job back, marked `already_queued`, rather than a second one that
    could only fail.
    """

    request.validate()
    # The version the user saw is checked when the job runs, like every other check.
    payload = {**request.to_payload(), "expected_version": request.expected_version}
    if items is not None:
        payload["items"] = [dict(line) for line in items]
    try:
        # The order's row lock serialises two identical requests on PostgreSQL; SQLite ignores
        # FOR UPDATE, and a write as the transaction's first statement takes its database lock
        # instead — so of two requests at once the second finds the first one's job waiting.
        db.session.execute(update(CancelJob).where(
            CancelJob.order_id == order_id, CancelJob.user_id == actor.id,
            CancelJob.status == QUEUED).values(status=CancelJob.status)
            .execution_options(synchronize_session=False))
        order = require_visible(actor, lock_order(order_id))
        check_may_cancel(actor, order, request.reason)
        waiting = db.session.scalars(select(CancelJob).where(
            CancelJob.order_id == order.id, CancelJob.user_id == actor.id,
            CancelJob.status == QUEUED).order_by(CancelJob.id)).all()
        same = next((job for job in waiting if job.payload == _as_stored(payload)), None)
        if same is not None:
            db.session.rollback()
            same.already_queued = True
            return same
        job = CancelJob(order_id=order.id, user_id=actor.id, payload=payload,
                        source=context.source, request_id=context.request_id, ip=context.ip,
                        status=QUEUED, created_at=utcnow())
        db.session.add(job)
        db.session.flush()
        record(actor, "order.cancel_queued", target_type="order", target_id=order.id,
               store_id=order.store_id, order_id=order.id,
               after={"job_id": job.id, "reason": request.reason, "notes": request.notes,
                      "scope": request.scope, "items": payload.get("items"),
                      "why": "maintenance mode"},
               context=context)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    job.already_queued = False
    if not is_on(fresh=True):  # switched off while we queued: the release may have run before
        hand_release_to_workers()
    return job


def _as_stored(payload):
    """The payload as the JSON column gives it back, to compare with a stored one."""
    return json.loads(json.dumps(payload, default=str))


def queued_message(job, order_number):
    """What the panel flashes and the APIs answer for a queued cancel."""
    if getattr(job, "already_queued", False):
        return (f"Maintenance in progress: your cancellation of {order_number} is already "
                f"queued (job #{job.id}) and will be processed when maintenance ends.")
    return (f"Maintenance in progress: your cancellation of {order_number} is queued (job "
            f"#{job.id}) and will be processed when maintenance ends.")


def queued_answer(job, status_url):
    """The 202 body of a queued cancel (API v1 and v2)."""
    from models import Order

    number = db.session.scalar(select(Order.number).where(Order.id == job.order_id))
    return {"queued": True, "order_id": job.order_id, "job_id": job.id, "status": QUEUED,
            "status_url": status_url, "message": queued_message(job, number)}


def queued_count():
    """How many cancellations wait for the end of maintenance (the banner's N)."""
    return sum(count() for count in QUEUE_COUNTERS)


def _queued_cancel_jobs():
    return db.session.scalar(select(func.count()).select_from(CancelJob)
                             .where(CancelJob.status == QUEUED))


# What the banner counts as waiting. Bulk jobs: append a function returning how many orders
# (or jobs) they hold.
QUEUE_COUNTERS = [_queued_cancel_jobs]


def queued_for(order):
    """The order's cancellations waiting for the end of maintenance, oldest first."""
    return db.session.scalars(select(CancelJob).where(
        CancelJob.order_id == order.id, CancelJob.status == QUEUED)
        .order_by(CancelJob.id)).all()


def banner():
    """What the panel's maintenance banner shows: None when off, else {"queued": N}.

    A banner must never be why a page fails: a database error here (the error page of a
    database outage renders the same layout) shows no banner instead."""
    try:
        if not is_on():
            return None
        return {"queued": queued_count(), "since": _switched_on_at()}
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("maintenance banner unavailable", exc_info=True)
        return None


def _switched_on_at():
    """When the last switch turned it on (None if it was switched on some other way)."""
    from models import AuditEvent

    last = db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "settings.maintenance_mode").order_by(AuditEvent.seq.desc())
        .limit(1))
    return last.created_at if last is not None and (last.after or {}).get(SETTING) else None


# --- releasing -------------------------------------------------------------------------------

def release_queued():
    """Worker side: when maintenance is off, run everything it held, in creation order.

    Idempotent and safe with any number of workers (each job is claimed by one conditional
    UPDATE). Returns {releaser name: how many it released}, or {} while maintenance is on.
    """
    if is_on(fresh=True):
        return {}
    from cancellation import bulk  # a use case of this layer that imports this module

    released = {}
    # Everything maintenance holds, released in this order: each takes no argument, returns how
    # many it released, and runs in the worker's app context once maintenance is off.
    for releaser in (release_cancel_jobs, bulk.start_queued):
        try:
            released[releaser.__name__] = releaser()
        except Exception:  # noqa: BLE001 - one kind of held work must not hold up the others
            db.session.rollback()
            log.exception("%s failed; the periodic check runs it again", releaser.__name__)
            released[releaser.__name__] = None
    return released


def release_cancel_jobs():
    """Move queued CancelJobs to `processing`, oldest first, and run each through
    `jobs.run_cancel_job` (which checks everything again under the order's row lock). Stops as
    soon as maintenance is back on. A job whose run broke stays `processing`, where
    `jobs.sweep_lost_jobs` finds it and runs it again."""
    from cancellation import jobs

    if not _has_queued():
        return 0
    lock = current_app.extensions["redis"].lock(RELEASE_LOCK, timeout=RELEASE_LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        return 0  # another worker is releasing; it drains the queue, new arrivals included
    released = 0
    try:
        while not is_on(fresh=True):
            job_id = _claim_oldest()
            if job_id is None:
                break
            try:
                jobs.run_cancel_job(job_id)
            except Exception:  # noqa: BLE001 - the next jobs must not wait for this one
                db.session.rollback()
                log.exception("queued cancel job %s failed to run; the sweep retries it",
                              job_id)
            released += 1
            _extend(lock)
    finally:
        _release(lock)
    return released


def _has_queued():
    found = db.session.scalar(select(CancelJob.id).where(CancelJob.status == QUEUED).limit(1))
    db.session.rollback()
    return found is not None


def _claim_oldest():
    """The oldest queued job, now `processing` — claimed by this worker alone — or None."""
    while True:
        job_id = db.session.scalar(select(CancelJob.id).where(CancelJob.status == QUEUED)
                                   .order_by(CancelJob.created_at, CancelJob.id).limit(1))
        if job_id is None:
            db.session.rollback()
            return None
        claimed = db.session.execute(
            update(CancelJob).where(CancelJob.id == job_id, CancelJob.status == QUEUED)
            .values(status="processing").execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        if claimed:
            return job_id


def _extend(lock):
    try:
        lock.reacquire()
    except Exception:  # noqa: BLE001 - lost the lock: ordering is best effort from here on
        log.info("maintenance release lock lost; continuing without it")


def _release(lock):
    try:
        lock.release()
    except Exception:  # noqa: BLE001 - it expired; nothing to release
        pass


__all__ = ["is_on", "switch", "queue_cancel", "release_queued",
           "MaintenanceInProgress", "queued_count", "queued_for", "banner",
           "QUEUE_COUNTERS"]
