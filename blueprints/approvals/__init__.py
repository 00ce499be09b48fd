"""The approvals panel: the approver's queue, the requester's "My requests", approve / reject,
and the approval request form the cancel dialog turns into when policy requires approval.

Thin: parse, check the capability, call cancellation.approvals, flash and redirect.
"""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from blueprints.api_common import audit_context
from blueprints.approvals.forms import ApprovalRequestForm, DecisionForm
from blueprints.auth import safe_next
from blueprints.auth.permissions import permission, requires
from blueprints.orders import DOMAIN_FIELDS, cancel_request_from, load_order, render_cancel_page
from cancellation import CancelDeskError, ConcurrentModification, ValidationFailed, approvals
from cancellation.policy import approval_reasons
from models import utcnow

bp = Blueprint("approvals", __name__, static_folder="static",
               static_url_path="/static/approvals")


@bp.app_context_processor
def _approvals_context():
    def approval_badge():
        """The navbar's count: requests waiting for me, plus outcomes of mine I have not seen."""
        if not current_user.is_authenticated:
            return {"waiting": 0, "unseen": 0, "total": 0}
        counts = approvals.badge_counts(current_user)
        return {**counts, "total": counts["waiting"] + counts["unseen"]}

    return {"approval_badge": approval_badge}


def _can(capability):
    return bool(permission(capability).can())


@bp.get("/approvals")
@requires("request_cancellation")
def index():
    approver = _can("approve_cancellation")
    tab = request.args.get("tab")
    if tab not in ("queue", "mine"):
        tab = "queue" if approver else "mine"
    if tab == "queue" and not approver:
        tab = "mine"
    queue = approvals.queue_of(current_user) if approver else []
    mine = approvals.requests_of(current_user)
    badge = approvals.badge_counts(current_user)
    # Outcomes the requester had not seen are highlighted once, then count as seen.
    new_ids = {a.id for a in mine if a.status in approvals.CLOSED and a.requester_seen_at is None}
    if tab == "mine" and new_ids:
        approvals.mark_outcomes_seen(current_user)
    return render_template(
        "approvals/index.html", tab=tab, approver=approver, queue=queue, mine=mine,
        badge=badge, form=DecisionForm(formdata=None), now=utcnow(), new_ids=new_ids,
        stale_reason=approvals.stale_reason, own_why=lambda a: approval_reasons(current_user,
                                                                                a.order))


def _decide(approval_id, decide, ok):
    form = DecisionForm()
    back = safe_next(form.next.data) if form.next.data else url_for("approvals.index")
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            flash("The form expired; please try again.", "warning")
        else:
            flash("The comment must be at most 2,000 characters.", "danger")
        return redirect(back)
    try:
        approval = decide(approval_id, current_user, form.comment.data,
                          audit_context("panel"))
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "warning" if exc.status == 409 else "danger")
        return redirect(back)
    flash(ok(approval), "success")
    return redirect(back)


@bp.post("/approvals/<int:approval_id>/approve")
@requires("approve_cancellation")
def approve(approval_id):
    return _decide(approval_id, approvals.approve, lambda a: Markup(
        'Approved request #{}: order <a href="{}" class="alert-link">{}</a> is cancelled; '
        "{} has been notified.").format(a.id, url_for("orders.detail", order_id=a.order_id),
                                        a.order.number, a.requested_by.name))


@bp.post("/approvals/<int:approval_id>/reject")
@requires("approve_cancellation")
def reject(approval_id):
    return _decide(approval_id, approvals.reject, lambda a: (
        f"Rejected request #{a.id}; order {a.order.number} was not changed and "
        f"{a.requested_by.name} has been notified."))


@bp.post("/approvals/<int:approval_id>/withdraw")
@requires("request_cancellation")
def withdraw(approval_id):
    return _decide(approval_id, approvals.withdraw, lambda a: (
        f"Withdrew request #{a.id}; order {a.order.number} was not changed."))


@bp.post("/orders/<int:order_id>/approval-request")
@requires("request_cancellation")
def request_form(order_id):
    """The cancel dialog in its approval-request form (seed A2, steps 3-6)."""
    order = load_order(order_id)
    form = ApprovalRequestForm()
    detail_url = url_for("orders.detail", order_id=order.id)
    back = safe_next(form.next.data) if form.next.data else detail_url
    if not form.validate_on_submit():
        return render_cancel_page(order, form, "The request was not sent: please correct the "
                                  "highlighted fields.", 400)
    try:
        approval, created = approvals.request_approval(
            order.id, current_user, cancel_request_from(form, order), form.justification.data,
            audit_context("panel"))
    except ValidationFailed as exc:
        for problem in exc.details.get("fields", []):
            name = problem["field"] if problem["field"] == "justification" \
                else DOMAIN_FIELDS.get(problem["field"], "")
            field = getattr(form, name, None)
            if field is not None:
                field.errors = list(field.errors) + [problem["message"].capitalize()]
        return render_cancel_page(order, form, "The request was not sent: please correct the "
                                  "highlighted fields.", 400)
    except ConcurrentModification as exc:
        flash(Markup("Order {} was changed by someone else while you were looking at it (it is "
                     'now version {}). Nothing was requested. <a href="{}" class="alert-link">'
                     "Refresh</a> and try again.").format(
            order.number, exc.details.get("current_version"), detail_url), "warning")
        return redirect(back)
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(f"No approval request was filed for order {order.number}: {exc.message}",
              "info" if exc.code == "approval_not_required" else "danger")
        return redirect(back)
    if created:
        flash(Markup('Approval request #{} for order {} sent to the approvers. The order is not '
                     'cancelled until one of them approves; follow it in <a href="{}" '
                     'class="alert-link">My requests</a>.').format(
            approval.id, order.number, url_for("approvals.index", tab="mine")), "success")
    else:
        flash(f"You already asked to cancel order {order.number} (request #{approval.id}); it "
              "is waiting for an approver.", "info")
    return redirect(back)
