"""Asynchronous single-order cancellation (API v2): check now, cancel in a worker, poll the state.

The checks run when the request arrives, so an operator gets 400/403/409 at once; the worker then
runs `cancel_order`, which checks again under the row lock, because the order may have changed in
between.
"""
from dataclasses import replace
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from cancellation import maintenance, outbox
from cancellation.audit import AuditContext
from cancellation.errors import CancelDeskError, NotFound
from cancellation.policy import evaluate_cancel
from cancellation.service import (
    CancelOutcome,
    CancelRequest,
    cancel_future_in_series,
    cancel_order,
    file_approval_request,
    get_visible_order,
)
from models import ApprovalRequest, Cancellation, Order, User, db, isoformat, utcnow
from models.jobs import CancelJob

TASK = "cancel_desk.run_cancel_job"


def submit_cancel(order_id, actor, request, context):
    """Validate and check; file an approval request or queue the job. Returns the CancelJob."""
    request.validate()
    order = get_visible_order(actor, order_id)
    decision = evaluate_cancel(actor, order, reason=request.reason,
                               expected_version=request.expected_version)
    job = CancelJob(order_id=order.id, user_id=actor.id, payload=request.to_payload(),
                    source=context.source, request_id=context.request_id, ip=context.ip)
    if decision.needs_approval:
        approval = file_approval_request(order, actor, replace(request, scope="this_instance"),
                                         decision.why, context)
        job.status, job.approval_request_id = "pending_approval", approval.id
    db.session.add(job)
    db.session.commit()
    if job.status == "processing":
        outbox.hand_to_workers(TASK, job.id)
    elif request.scope == "all_future" and order.series_id:
        # The approver decides this order only; each later instance is handled now, on its own
        # (as cancel_order does when the first order of an all_future request needs approval).
        cancel_future_in_series(order, actor, request, context, CancelOutcome(order=order))
    return job


def run_cancel_job(job_id):
    """Worker side. Safe to run twice: a finished job is left alone, and of two workers given
    the same job (a redelivery, the sweep) only the one whose claim wins runs it; the other
    returns "nothing_to_do"."""
    job = db.session.scalar(select(CancelJob).where(CancelJob.id == job_id)
                            .execution_options(populate_existing=True))
    if job is None or job.status != "processing":
        db.session.rollback()
        return job.status if job else "missing"
    seen = job.attempts
    if seen and job.created_at >= _stale_before():  # a worker is on it right now
        db.session.rollback()
        return "nothing_to_do"
    if maintenance.is_on(fresh=True):  # switched on since it was handed over: it waits
        return maintenance.QUEUED if _move(job_id, seen, status=maintenance.QUEUED) \
            else "nothing_to_do"
    # The claim: processing and `seen` attempts, compare-and-set. Without it two workers (or a
    # worker and the maintenance release) that both read `processing` would both run the job.
    attempt = seen + 1
    if not _move(job_id, seen, attempts=attempt):
        return "nothing_to_do"
    actor = db.session.get(User, job.user_id)
    context = AuditContext(request_id=job.request_id, ip=job.ip, source=job.source)
    try:
        if job.payload.get("items"):  # a partial cancellation (cancellation/partial.py)
            from cancellation.partial import run_job_payload
            outcome = run_job_payload(job.order_id, actor, job.payload, context)
        else:
            outcome = cancel_order(job.order_id, actor, CancelRequest.from_payload(job.payload),
                                   context)
    except CancelDeskError as exc:
        job = db.session.get(CancelJob, job_id)
        done_before = _cancelled_by_this_job(job)
        if done_before is not None:  # a redelivery after the cancel committed
            # The run before may have died — or still be running — before it reached the later
            # orders of an all_future series: go through them too (each cancel is locked and
            # version-checked, so one already done or being done is not done twice).
            _cancel_rest_of_series(job, actor, context)
            return _finish(job_id, attempt, "completed", cancellation_id=done_before.id)
        return _finish(job_id, attempt, "failed", error_code=exc.code,
                       error_message=exc.message)
    if outcome.needs_approval:
        return _finish(job_id, attempt, "pending_approval",
                       approval_request_id=outcome.approval_request.id)
    return _finish(job_id, attempt, "completed", cancellation_id=outcome.cancellation_id)


def _cancel_rest_of_series(job, actor, context):
    if job.payload.get("items") or job.payload.get("scope") != "all_future":
        return
    order = db.session.get(Order, job.order_id)
    if order is not None and order.series_id:
        cancel_future_in_series(order, actor, CancelRequest.from_payload(job.payload), context,
                                CancelOutcome(order=order))


def _stale_before():
    """A job created before this moment, claimed and still processing, lost its worker: the
    sweep's redelivery takes it over. (A job has no claim time; its age stands in for it, as
    `sweep_lost_jobs` judges it.)"""
    return utcnow() - timedelta(seconds=current_app.config["OUTBOX_STALE_SECONDS"])


def _move(job_id, seen, **values):
    """Compare-and-set on a processing job with `seen` attempts; whether this caller won."""
    moved = db.session.execute(
        update(CancelJob).where(CancelJob.id == job_id, CancelJob.status == "processing",
                                CancelJob.attempts == seen)
        .values(**values).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return bool(moved)


def _cancelled_by_this_job(job):
    return db.session.scalar(select(Cancellation).where(
        Cancellation.order_id == job.order_id, Cancellation.actor_id == job.user_id,
        Cancellation.created_at >= job.created_at.replace(microsecond=0))
        .order_by(Cancellation.id.desc()).limit(1))


def _finish(job_id, attempt, status, **fields):
    """End the run this worker claimed; a run taken over meanwhile leaves the other's outcome."""
    if _move(job_id, attempt, status=status, finished_at=utcnow(), **fields):
        return status
    return db.session.scalar(select(CancelJob.status).where(CancelJob.id == job_id))


def latest_job(order):
    return db.session.scalar(select(CancelJob).where(CancelJob.order_id == order.id)
                             .order_by(CancelJob.id.desc()).limit(1))


def cancel_status(order):
    """What GET .../cancel/status answers."""
    job = latest_job(order)
    if job is None:
        if order.status == "cancelled":
            return {"order_id": order.id, "status": "completed", "order_status": order.status,
                    "job_id": None}
        raise NotFound("No cancellation has been requested for this order.")
    return job_state(job, order)


def job_state(job, order):
    """One job as GET .../cancel/status and GET /api/v1/cancel_jobs/:id answer it."""
    body = {"order_id": order.id, "status": job.status, "order_status": order.status,
            "job_id": job.id, "requested_at": isoformat(job.created_at),
            "finished_at": isoformat(job.finished_at)}
    if job.status == "failed":
        body["error"] = {"code": job.error_code, "message": job.error_message}
    if job.cancellation_id:
        body["cancellation_id"] = job.cancellation_id
    if job.approval_request_id:
        body["approval_request_id"] = job.approval_request_id
    if (job.payload or {}).get("scope") == "all_future" and order.series_id \
            and job.status in ("completed", "pending_approval"):
        body.update(series_outcome(job, order))
    return body


def series_outcome(job, order):
    """Which later instances of the series an all_future job cancelled, and which it sent for
    approval: what its user did to them between the job's request and its end."""
    until = job.finished_at or utcnow()
    since = job.created_at.replace(microsecond=0)
    later = select(Order.id).where(Order.series_id == order.series_id,
                                   Order.placed_at > order.placed_at)
    cancelled = db.session.scalars(select(Cancellation.order_id).where(
        Cancellation.order_id.in_(later), Cancellation.actor_id == job.user_id,
        Cancellation.created_at >= since, Cancellation.created_at <= until)
        .order_by(Cancellation.id)).all()
    asked = db.session.scalars(select(ApprovalRequest.order_id).where(
        ApprovalRequest.order_id.in_(later), ApprovalRequest.requested_by_id == job.user_id,
        ApprovalRequest.created_at >= since, ApprovalRequest.created_at <= until)
        .order_by(ApprovalRequest.id)).all()
    return {"also_cancelled": list(dict.fromkeys(cancelled)),
            "also_pending_approval": list(dict.fromkeys(asked))}


def sweep_lost_jobs(stale_seconds):
    """Re-dispatch jobs still processing long after they were queued (their task was lost)."""
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    ids = db.session.scalars(select(CancelJob.id).where(
        CancelJob.status == "processing", CancelJob.created_at < cutoff).limit(500)).all()
    db.session.rollback()
    for job_id in ids:
        outbox.hand_to_workers(TASK, job_id)
    return len(ids)


__all__ = ["submit_cancel", "run_cancel_job", "cancel_status", "job_state", "sweep_lost_jobs"]
