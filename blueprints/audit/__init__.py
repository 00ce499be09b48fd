"""The audit log: filter and page through events, export them as CSV, verify the hash chain,
and the per-store, per-day compliance report of voided sales.

Read-only by design: audit events are append-only, so nothing here (or anywhere) edits or
deletes one. Store managers see the events of their stores only.
"""
from flask import (
    Blueprint,
    Response,
    current_app,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy import func, select

from blueprints.auth.permissions import permission, requires
from blueprints.orders import audit_changes
from cancellation import oversight, policy, verify_chain
from models import AuditEvent, Order, db, utcnow

bp = Blueprint("audit", __name__, url_prefix="/audit")

PER_PAGE = 50


def _see_contact():
    return bool(permission("view_customer_contact").can())


def _stores():
    return policy.visible_stores(current_user)


@bp.get("/")
@requires("view_audit")
def index():
    stores = _stores()
    scope = policy.store_scope(current_user)
    filters = oversight.AuditFilters.from_args(request.args, scope)
    query = oversight.audit_query(current_user, filters)
    per_page = current_app.config.get("AUDIT_PER_PAGE", PER_PAGE)
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    pages = max((total + per_page - 1) // per_page, 1)
    page = min(filters.page, pages)
    events = db.session.scalars(query.order_by(AuditEvent.seq.desc())
                                .limit(per_page).offset((page - 1) * per_page)).all()
    see_contact = _see_contact()
    return render_template(
        "audit/index.html", events=events, total=total, page=page, pages=pages,
        first=(page - 1) * per_page + 1 if total else 0, last=min(page * per_page, total),
        filters=filters, stores=stores, store_names={s.id: s.name for s in stores},
        actions=oversight.audit_actions(current_user),
        changes=audit_changes, see_contact=see_contact,
        order_numbers=_order_numbers(events),
        page_url=lambda number: url_for("audit.index", **filters.as_args(page=number)),
        export_url=url_for("audit.export", **filters.as_args(page=None)),
        today=utcnow().date())


def _order_numbers(events):
    """Order numbers for the page's events, in one query."""
    ids = {event.order_id for event in events if event.order_id is not None}
    if not ids:
        return {}
    return dict(db.session.execute(select(Order.id, Order.number).where(Order.id.in_(ids))).all())


@bp.get("/export.csv")
@requires("view_audit")
def export():
    """Every event the filters match, streamed: rows are read in batches and sent as they come."""
    filters = oversight.AuditFilters.from_args(request.args, policy.store_scope(current_user))
    rows = oversight.audit_rows(current_user, filters, _see_contact())
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    return _csv(oversight.csv_stream(oversight.AUDIT_CSV_HEADER, rows), f"audit-log-{stamp}.csv")


@bp.get("/verify")
@requires("view_audit")
def verify():
    """Walk the whole hash chain; name the first event whose hash or link does not hold."""
    started = utcnow()
    report = verify_chain()
    broken = None
    if report.first_broken_seq is not None:
        broken = db.session.scalar(select(AuditEvent).where(
            AuditEvent.seq == report.first_broken_seq))
        scope = policy.store_scope(current_user)
        if broken is not None and scope is not None and broken.store_id not in scope:
            broken = None  # named by number only: its contents belong to another store
    seconds = (utcnow() - started).total_seconds()
    return render_template("audit/verify.html", report=report, broken=broken, seconds=seconds,
                           checked_at=started)


@bp.get("/compliance.csv")
@requires("view_audit")
def compliance():
    """Voided sales of one store on one business day (store time), for track-and-trace."""
    store = oversight.compliance_store(current_user,
                                       oversight.query_int(request.args.get("store")))
    day = oversight.compliance_day(request.args.get("date"))
    rows = oversight.compliance_rows(store, day)
    slug = "".join(c if c.isalnum() else "-" for c in store.name.lower()).strip("-")
    return _csv(oversight.csv_stream(oversight.COMPLIANCE_HEADER, rows),
                f"voided-sales-{slug}-{day.isoformat()}.csv")


def _csv(chunks, filename):
    response = Response(stream_with_context(chunks), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
