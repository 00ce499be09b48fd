"""API v1 bulk cancellation: submit a job, poll it, retry its failures."""
from flask import jsonify, url_for
from flask_login import current_user

from blueprints.api_common import audit_context, parse_json, parse_query, responses as out
from blueprints.api_common.openapi import documented
from blueprints.api_common.schemas import BulkJobQuery, BulkUpdateBody, RetryBody
from blueprints.api_v1 import bp
from blueprints.auth.permissions import requires
from cancellation import CancelRequest, bulk


def accepted(job):
    return jsonify({
        "job_id": job.id, "status": job.status, "total": job.total,
        "status_url": url_for("api_v1.get_bulk_job", job_id=job.id),
        "page_url": url_for("orders.bulk_job", job_id=job.id),
    }), 202


@bp.post("/orders/bulk_update")
@documented("Cancel many orders as one background job", body=BulkUpdateBody,
            responses={202: out.BulkAccepted}, errors=(400, 403))
@requires("bulk_cancel")
def bulk_update():
    """Answers at once with the job; the workers cancel each order in its own transaction.
    Orders the caller may not cancel fail with their code (another store's order: not_found)
    without stopping the others. In maintenance mode the job is queued and starts when
    maintenance ends."""
    body = parse_json(BulkUpdateBody)
    request = CancelRequest(reason=body.reason, notes=body.notes,
                            notify_customer=body.notify_customer)
    job = bulk.submit(current_user, body.order_ids, request, audit_context("api_v1"))
    return accepted(job)


@bp.get("/bulk_jobs/<int:job_id>")
@documented("Progress and per-order results of a bulk job", query=BulkJobQuery,
            responses={200: out.BulkJobState})
@requires("bulk_cancel")
def get_bulk_job(job_id):
    args = parse_query(BulkJobQuery)
    job = bulk.visible_job(current_user, job_id)
    return jsonify(bulk.job_status(job, args.page, args.per_page))


@bp.post("/bulk_jobs/<int:job_id>/retry")
@documented("Retry the failed orders of a finished bulk job (as a new job)", body=RetryBody,
            responses={202: out.BulkAccepted}, errors=(400, 403, 404, 409))
@requires("bulk_cancel")
def retry_bulk_job(job_id):
    body = parse_json(RetryBody, optional=True)
    job = bulk.visible_job(current_user, job_id)
    retry = bulk.retry_failed(job, current_user, audit_context("api_v1"), notes=body.notes)
    return accepted(retry)
