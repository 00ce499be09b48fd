"""API v1 partial cancellation: PUT /api/v1/orders/:id/items (seed A3, "Modify Order")."""
from flask import jsonify, url_for
from flask_login import current_user

from blueprints.api_common import audit_context, parse_json, responses as out
from blueprints.api_common.openapi import documented
from blueprints.api_common.schemas import CancelItemsBody
from blueprints.api_common.serializers import approval_dict, cancellation_dict, order_dict
from blueprints.api_v1 import bp
from blueprints.auth.permissions import requires
from cancellation import PartialCancelRequest, maintenance, submit_items
from cancellation.partial import describe
from models import Order, db


@bp.put("/orders/<int:order_id>/items")
@documented("Cancel some items of an order (or file an approval request)", body=CancelItemsBody,
            responses={200: out.ItemsCancelled, 202: out.ItemsAccepted},
            errors=(400, 403, 404, 409))
@requires("request_cancellation")
def cancel_order_items(order_id):
    """The same checks as PUT .../status, in the same order (404, 403, 400 invalid_state, 409),
    then each line: an item of this order, 1 up to its open quantity, listed once (400
    validation_error naming the line, with the open items). 200: the order, its totals
    recalculated, and the cancellation (refund, points, stock lines); the order is `cancelled`
    once nothing is left open. 202 with `approval_request` when approval is required; 202 with
    `job_id` and `status_url` when a worker does it (more lines than PARTIAL_SYNC_MAX_LINES, or
    maintenance mode: `queued`)."""
    body = parse_json(CancelItemsBody)
    contact = body.customer_request
    request = PartialCancelRequest(
        reason=body.reason, notes=body.notes, notify_customer=body.notify_customer,
        expected_version=body.version, **body.refund_fields(),
        request_contact=contact.contact if contact else None,
        request_channel=contact.channel if contact else None,
        requested_at=contact.requested_at if contact else None,
        lines=[(line.item_id, line.quantity) for line in body.items])
    outcome = submit_items(order_id, current_user, request, audit_context("api_v1"))
    if outcome.needs_approval:
        return jsonify({"approval_request": approval_dict(outcome.approval_request,
                                                          current_user),
                        "message": "Approval is required before these items can be cancelled."
                        }), 202
    if outcome.job is not None:
        job = outcome.job
        status_url = url_for("api_v1.cancel_job", job_id=job.id)
        if job.status == maintenance.QUEUED:
            return jsonify(maintenance.queued_answer(job, status_url)), 202
        return jsonify({"order_id": job.order_id, "job_id": job.id, "status": job.status,
                        "status_url": status_url,
                        "message": f"{len(request.lines)} lines of order {outcome.order.number} "
                                   "are being cancelled by a worker; poll status_url."}), 202
    order = db.session.get(Order, order_id)
    return jsonify({**order_dict(order, current_user),
                    "cancellation": cancellation_dict(outcome.cancellation),
                    "message": describe(outcome.cancellation)})
