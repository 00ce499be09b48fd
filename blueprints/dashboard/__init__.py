"""The dashboard, the panel's landing page: cancellations by reason, store, staff and day,
pending approvals, the manual-handling queue and abuse flags — for the viewer's stores only."""
from pathlib import Path

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from blueprints.api_common import audit_context
from blueprints.auth.permissions import permission, requires
from blueprints.orders.forms import ActionForm
from cancellation import CancelDeskError, oversight, policy
from models import utcnow

bp = Blueprint("dashboard", __name__)

CHART_LIBRARY = "vendor/chart.umd.js"
APPROVAL_QUEUE_ENDPOINTS = ("approvals.queue", "approvals.index")


def charts_available():
    """Chart.js is vendored at install time (npm); without it the page shows its tables only."""
    return (Path(current_app.static_folder) / CHART_LIBRARY).is_file()


def _approvals_url():
    for endpoint in APPROVAL_QUEUE_ENDPOINTS:
        if endpoint in current_app.view_functions:
            return url_for(endpoint)
    return None


@bp.get("/dashboard")
@requires("view_orders")
def index():
    stores = policy.visible_stores(current_user)
    store_id = request.args.get("store", type=int)
    if store_id not in {s.id for s in stores}:
        store_id = None
    period = oversight.Period.from_args(request.args)
    stats = oversight.cancellation_stats(current_user, period, store_id)
    see_oversight = permission("view_audit").can()
    queue, queue_total = oversight.manual_handling(current_user)
    charts = {name: breakdown.chart() for name, breakdown in stats.items()}
    return render_template(
        "dashboard/index.html", period=period, stats=stats, charts=charts, stores=stores,
        store_id=store_id, charts_available=charts_available(), chart_library=CHART_LIBRARY,
        pending_approvals=oversight.pending_approvals_count(current_user),
        approvals_url=_approvals_url(), queue=queue, queue_total=queue_total,
        flags=oversight.abuse_flags(current_user) if see_oversight else [],
        see_oversight=see_oversight, can_acknowledge=permission("administer").can(),
        kind_labels=oversight.KIND_LABELS, action_form=ActionForm(), today=utcnow().date())


@bp.post("/dashboard/abuse-flags/<int:flag_id>/acknowledge")
@requires("administer")
def acknowledge(flag_id):
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "warning")
        return redirect(url_for("dashboard.index"))
    try:
        flag, changed = oversight.acknowledge_flag(flag_id, current_user, audit_context("panel"))
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "danger")
        return redirect(url_for("dashboard.index"))
    if changed:
        flash(f"Abuse flag #{flag.id} for {flag.user.name} acknowledged.", "success")
    else:
        flash(f"Abuse flag #{flag.id} was already acknowledged.", "info")
    return redirect(url_for("dashboard.index", _anchor="abuse-flags"))
