"""Thin task wrappers around the outbox delivery functions of the domain."""
from celery import shared_task

from cancellation import outbox


@shared_task(name="cancel_desk.deliver_refund")
def deliver_refund(refund_id):
    return outbox.deliver_refund(refund_id)


@shared_task(name="cancel_desk.deliver_notification")
def deliver_notification(notification_id):
    return outbox.deliver_notification(notification_id)


@shared_task(name="cancel_desk.sweep_outbox")
def sweep_outbox():
    return outbox.sweep()
