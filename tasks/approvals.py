"""Thin task wrappers around the approval workflow (cancellation/approvals.py)."""
from celery import shared_task

from cancellation import approvals


@shared_task(name="cancel_desk.route_approval_request")
def route_approval_request(approval_id):
    return approvals.route(approval_id)


@shared_task(name="cancel_desk.deliver_approval_notice")
def deliver_approval_notice(notice_id):
    return approvals.deliver_notice(notice_id)


@shared_task(name="cancel_desk.expire_approval_requests")
def expire_approval_requests():
    """Beat: lapse undecided requests, and re-send what a lost task left behind."""
    return {"expired": approvals.expire_overdue(), **approvals.sweep()}
