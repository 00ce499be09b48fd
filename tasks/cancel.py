"""Thin task wrappers: the asynchronous single-order cancel of API v2 and its housekeeping."""
from celery import shared_task
from flask import current_app

from cancellation import idempotency, jobs


@shared_task(name="cancel_desk.run_cancel_job")
def run_cancel_job(job_id):
    return jobs.run_cancel_job(job_id)


@shared_task(name="cancel_desk.sweep_cancel_jobs")
def sweep_cancel_jobs():
    return jobs.sweep_lost_jobs(current_app.config["OUTBOX_STALE_SECONDS"])


@shared_task(name="cancel_desk.purge_idempotency_keys")
def purge_idempotency_keys():
    return idempotency.purge_expired()
