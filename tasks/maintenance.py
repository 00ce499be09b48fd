"""Thin task wrapper: run what maintenance mode held once it is off (cancellation/maintenance)."""
from celery import shared_task

from cancellation import maintenance


@shared_task(name=maintenance.RELEASE_TASK)
def release_queued():
    """Sent when an admin turns maintenance off, and run by beat so a lost message (or a switch
    made elsewhere) still gets the queue processed; a no-op while on or when nothing waits."""
    return maintenance.release_queued()
