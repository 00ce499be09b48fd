"""Thin task wrappers around the outbox delivery functions of the domain."""
from celery import shared_task

from cancellation import outbox
from models import Notification, Refund


@shared_task(name="cancel_desk.deliver_refund")
def deliver_refund(refund_id):
    return outbox.deliver_refund(refund_id)


@shared_task(name="cancel_desk.deliver_notification")
def deliver_notification(notification_id):
    return outbox.deliver_notification(notification_id)


@shared_task(name="cancel_desk.deliver_outbox")
def deliver_outbox(refund_ids, notification_ids):
    """A cancellation's refund and notice (or a batch's), claimed, delivered and settled
    together."""
    return outbox.deliver_rows(refund_ids, notification_ids)


@shared_task(name="cancel_desk.sweep_outbox")
def sweep_outbox():
    return outbox.sweep()


@shared_task(name="cancel_desk.deliver_refunds")
def deliver_refunds(refund_ids):
    return outbox.deliver_many(Refund, refund_ids)


@shared_task(name="cancel_desk.deliver_notifications")
def deliver_notifications(notification_ids):
    return outbox.deliver_many(Notification, notification_ids)
