"""API v2 — the operators' runbook: pre-checks, preview, idempotent async cancel, reinstatement,
post-checks. Every rule is the domain's; this module parses, authorizes and serializes."""
from functools import wraps

from flask import Blueprint, jsonify, make_response, request
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from blueprints.api_common import (
    BadBody,
    audit_context,
    error_response,
    parse_json,
    parse_query,
    read_body,
    require_token_user,
    responses as out,
)
from blueprints.api_common.openapi import documented
from blueprints.api_common.schemas import Reason, ReinstateBody, V2CancelBody
from blueprints.api_common.serializers import notification_dict, refund_dict
from blueprints.auth.permissions import requires
from cancellation import (
    CancelDeskError,
    CancelRequest,
    NotFound,
    get_visible_order,
    idempotency,
    maintenance,
)
from cancellation.jobs import cancel_status, series_outcome
from cancellation.policy import approval_reasons, blockers_of, can, capabilities_of
from cancellation.preview import preview_cancel
from cancellation.privacy import redact
from cancellation.reinstate import reinstate_eligibility, reinstate_order
from cancellation.service import submit
from models import AuditEvent, Notification, Order, Refund, User, db, isoformat, money

bp = Blueprint("api_v2", __name__, url_prefix="/api/v2")
bp.before_request(require_token_user)


class PreviewQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: Reason | None = Field(default=None, description="preview for this reason code")
    notify_stakeholders: bool = True


def idempotent(view):
    """Require X-Idempotency-Key; replay, refuse (409/422) or run and remember the answer."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        key = idempotency.check_key(request.headers.get("X-Idempotency-Key"))
        try:
            print_ = idempotency.fingerprint(request.method, request.path, read_body())
        except RecursionError:  # nested deeper than the JSON parser goes: refused, key unused
            return error_response(BadBody("The body is not valid JSON: it is nested too "
                                          "deeply."))
        taken = idempotency.begin(current_user.id, key, request.method, request.path, print_)
        if isinstance(taken, idempotency.Replay):
            response = make_response(jsonify(taken.body), taken.status)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            response = make_response(view(*args, **kwargs))
        except (CancelDeskError, BadBody) as exc:
            response = error_response(exc)
        except Exception:
            idempotency.release(taken)
            raise
        if response.status_code >= 500:
            idempotency.release(taken)
        else:
            idempotency.complete(taken, response.status_code, response.get_json(silent=True))
        return response

    return wrapped


@bp.get("/users/<int:user_id>/roles")
@documented("Roles and capabilities of a user (runbook pre-check 1)",
            responses={200: out.UserRoles})
@requires("use_api_v2")
def user_roles(user_id):
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("User not found.")
    return jsonify({"user_id": user.id, "email": user.email, "roles": [user.role],
                    "active": user.is_active, "stores": sorted(user.store_ids),
                    "all_stores": user.sees_every_store,
                    "capabilities": sorted(capabilities_of(user))})


@bp.get("/orders/<int:order_id>/status")
@documented("Order status (pre-check 2, post-check 1)", responses={200: out.OrderState})
@requires("use_api_v2")
def order_status(order_id):
    order = get_visible_order(current_user, order_id)
    return jsonify({"order_id": order.id, "number": order.number, "status": order.status,
                    "version": order.version, "cancellable": order.is_cancellable,
                    "updated_at": isoformat(order.updated_at)})


@bp.get("/orders/<int:order_id>/dependencies")
@documented("Billing hold, shipment and other blockers (pre-check 3)",
            responses={200: out.Dependencies})
@requires("use_api_v2")
def order_dependencies(order_id):
    order = get_visible_order(current_user, order_id)
    return jsonify({
        "order_id": order.id, "billing_hold": order.billing_hold,
        "shipment_status": order.shipment_status, "payment_status": order.payment_status,
        "recurring_series": order.series_id,
        "blockers": [{"code": b.code, "message": b.message} for b in blockers_of(order)]})


@bp.get("/orders/<int:order_id>/metadata")
@documented("Age and auto-approval eligibility (pre-check 4)", responses={200: out.Metadata})
@requires("use_api_v2")
def order_metadata(order_id):
    order = get_visible_order(current_user, order_id)
    why = approval_reasons(current_user, order)
    return jsonify({"order_id": order.id, "number": order.number, "store_id": order.store_id,
                    "placed_at": isoformat(order.placed_at), "age_days": order.age_days,
                    "total": money(order.total_cents), "auto_approval_eligible": not why,
                    "approval_reasons": why})


@bp.get("/orders/<int:order_id>/cancel/preview")
@documented("Impact preview; changes nothing (procedure step 2)", query=PreviewQuery,
            responses={200: out.Preview})
@requires("use_api_v2")
def cancel_preview(order_id):
    order = get_visible_order(current_user, order_id)
    args = parse_query(PreviewQuery)
    return jsonify(preview_cancel(current_user, order, reason=args.reason,
                                  notify=args.notify_stakeholders))


@bp.post("/orders/<int:order_id>/cancel")
@documented("Cancel asynchronously (procedure step 3)", body=V2CancelBody,
            responses={202: out.CancelAccepted}, errors=(400, 403, 404, 409), idempotent=True)
@requires("use_api_v2")
@idempotent
def cancel(order_id):
    """In maintenance mode the cancel is stored as queued (202, `status: queued`) and runs when
    maintenance ends; poll the status URL. Scope all_future also cancels every later,
    still-cancellable order of the series (the status reports them)."""
    body = parse_json(V2CancelBody)
    request = CancelRequest(
        reason=body.reason, notes=body.notes, notify_customer=body.notify_stakeholders,
        expected_version=body.version, scope=body.scope,
        **body.refund_fields())
    status_url = f"/api/v2/orders/{order_id}/cancel/status"
    job = submit(order_id, current_user, request, audit_context("api_v2"), wait=False).job
    if job.status == maintenance.QUEUED:
        return jsonify(maintenance.queued_answer(job, status_url)), 202
    answer = {"order_id": order_id, "status": job.status, "job_id": job.id,
              "status_url": status_url}
    if job.status == "pending_approval" and body.scope == "all_future":
        answer.update(series_outcome(job, db.session.get(Order, order_id)))
    if job.approval_request_id:
        from blueprints.api_common.serializers import approval_dict
        from models import ApprovalRequest
        answer["approval_request"] = approval_dict(
            db.session.get(ApprovalRequest, job.approval_request_id), current_user)
    return jsonify(answer), 202


@bp.get("/orders/<int:order_id>/cancel/status")
@documented("Poll the asynchronous cancel (procedure step 4)", responses={200: out.CancelState})
@requires("use_api_v2")
def cancel_state(order_id):
    return jsonify(cancel_status(get_visible_order(current_user, order_id)))


@bp.get("/orders/<int:order_id>/reinstate/eligibility")
@documented("Reinstatement eligibility and deadline (rollback step 1)",
            responses={200: out.Eligibility})
@requires("use_api_v2")
def reinstate_check(order_id):
    order = get_visible_order(current_user, order_id)
    return jsonify(reinstate_eligibility(order).to_dict())


@bp.post("/orders/<int:order_id>/reinstate")
@documented("Reinstate within the window (rollback step 2)", body=ReinstateBody,
            responses={200: out.Reinstated}, errors=(400, 403, 404, 409, 503), idempotent=True)
@requires("use_api_v2")
@idempotent
def reinstate(order_id):
    """503 `maintenance_mode` while maintenance is on (`reinstate_order` refuses): nothing
    changes; ask again after it (the idempotency key is not used up by a 503)."""
    body = parse_json(ReinstateBody)
    order = reinstate_order(order_id, current_user, reason=body.reason,
                            restore_previous_state=body.restore_previous_state,
                            use_store_credit=body.use_store_credit,
                            context=audit_context("api_v2"))
    return jsonify({"order_id": order.id, "status": order.status, "version": order.version,
                    "reinstated": True, "payment_status": order.payment_status,
                    "balance_due": money(order.balance_due_cents)})


@bp.get("/billing/orders/<int:order_id>/status")
@documented("Refunds and their states (post-check 2)", responses={200: out.Billing})
@requires("use_api_v2")
def billing_status(order_id):
    order = get_visible_order(current_user, order_id)
    refunds = db.session.scalars(select(Refund).where(Refund.order_id == order.id)
                                 .order_by(Refund.id)).all()
    return jsonify({"order_id": order.id, "payment_status": order.payment_status,
                    "paid": money(order.paid_cents), "refunded": money(order.refunded_cents),
                    "refunds": [refund_dict(r) for r in refunds]})


@bp.get("/notifications/orders/<int:order_id>/history")
@documented("Notifications and their states (post-check 2)",
            responses={200: out.NotificationHistory})
@requires("use_api_v2")
def notification_history(order_id):
    order = get_visible_order(current_user, order_id)
    rows = db.session.scalars(select(Notification).where(Notification.order_id == order.id)
                              .order_by(Notification.id)).all()
    return jsonify({"order_id": order.id, "notifications": [notification_dict(n) for n in rows]})


@bp.get("/orders/<int:order_id>/audit-log")
@documented("The order's audit events (post-check 3)", responses={200: out.AuditLog})
@requires("use_api_v2")
def audit_log(order_id):
    order = get_visible_order(current_user, order_id)
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.order_id == order.id)
                                .order_by(AuditEvent.seq)).all()
    see_contact = can(current_user, "view_customer_contact")
    return jsonify({"order_id": order.id, "events": [{
        "seq": e.seq, "at": isoformat(e.created_at), "action": e.action,
        "user_id": e.actor_id, "actor": e.actor_label, "request_id": e.request_id,
        "before": redact(e.before, see_contact), "after": redact(e.after, see_contact)}
        for e in events]})
