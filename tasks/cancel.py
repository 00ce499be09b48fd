"""Thin task wrappers: the asynchronous single-order cancel of API v2 and its housekeeping."""
from celery import shared_task
from flask import current_app

from cancellation import idempotency, jobs
from models import LoginSession, db


@shared_task(name="cancel_desk.run_cancel_job")
def run_cancel_job(job_id):
    return jobs.run_cancel_job(job_id)


@shared_task(name="cancel_desk.sweep_cancel_jobs")
def sweep_cancel_jobs():
    return jobs.sweep_lost_jobs(current_app.config["OUTBOX_STALE_SECONDS"])


@shared_task(name="cancel_desk.purge_idempotency_keys")
def purge_idempotency_keys():
    """Expired idempotency keys, and sign-ins that ended a month ago: the hourly housekeeping."""
    purged = idempotency.purge_expired()
    sign_ins = LoginSession.purge()
    db.session.commit()
    return {"idempotency_keys": purged, "sign_ins": sign_ins}
