"""Thin task wrappers: the batches and the callback of a bulk job's chord, and its watchdog."""
from celery import shared_task
from flask import current_app

from cancellation import bulk


# A chord counts its header tasks' results, so these two keep theirs (the app ignores results
# by default). A batch returns a small summary; it never raises for one order's failure.
@shared_task(name=bulk.BATCH_TASK, ignore_result=False)
def bulk_batch(job_id, item_ids):
    return bulk.run_batch(job_id, item_ids)


@shared_task(name=bulk.FINISH_TASK, ignore_result=False)
def bulk_finish(job_id):
    return bulk.finish(job_id)


@shared_task(name="cancel_desk.bulk_watchdog")
def bulk_watchdog():
    return bulk.watchdog(current_app.config["BULK_STALL_SECONDS"])
