"""Bulk cancellation in the panel (seed A1): the orders list's "Bulk Actions → Cancel Orders",
the job page with its live progress and per-order results, "Retry failed", and the jobs list.

Thin like the rest of the blueprint: work out which orders the user chose, take the reason and
the confirmation, then hand everything to `cancellation.bulk`; the workers decide each order.
"""
from types import SimpleNamespace

from flask import current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from blueprints.api_common import audit_context
from blueprints.auth.permissions import requires
from blueprints.orders import (
    _can,
    bp,
    current_path,
    list_back_link,
    matching_orders,
    visible_stores,
)
from blueprints.orders.forms import ActionForm, BulkCancelForm, ListFilters
from cancellation import CancelDeskError, CancelRequest, ValidationFailed, bulk, visible_orders
from models import BulkJob, Order, db
from models.bulk import BulkJobStatus

RESULTS_PER_PAGE = 100
JOBS_PER_PAGE = 25
MAX_ID = 2**31 - 1
# The list's filter fields, as its query string and the bulk form's hidden fields name them.
FILTER_FIELDS = ("q", "status", "store", "from", "to")
UNFINISHED = (BulkJobStatus.RUNNING.value, BulkJobStatus.QUEUED.value)


class BadSelection(ValidationFailed):
    """The orders to cancel cannot be worked out from what was posted."""


# --- the orders list -------------------------------------------------------------------------

def list_context(filters, total, newest):
    """What the orders list shows for bulk cancelling; `bulk` is None without bulk_cancel.
    `newest`: the id "select all matching" is frozen at (cancellation.orders.order_page)."""
    if not _can("bulk_cancel"):
        return {"bulk": None}
    form = BulkCancelForm(formdata=None, next=current_path(), matching_total=total,
                          max_order_id=newest)
    running = bulk.running_jobs(current_user, limit=100)
    return {"bulk": SimpleNamespace(form=form, running=running, total=total,
                                    max_orders=current_app.config["BULK_MAX_ORDERS"],
                                    filter_args=filters.as_args(page=None))}


# --- submitting ------------------------------------------------------------------------------

@bp.post("/orders/bulk-cancel")
@requires("bulk_cancel")
def bulk_cancel():
    """Start a bulk job. Without `confirmed` (the dialog's second step, or no JavaScript) it
    renders the confirmation page instead; any problem goes back to the list, nothing changed."""
    form = BulkCancelForm()
    back = list_back_link(form.next.data)
    try:
        order_ids, filters = selected_orders(form)
    except BadSelection as exc:
        flash(f"Nothing was cancelled: {exc.message}", "danger")
        return redirect(back)

    if form.confirmed.data != "y":
        return render_template("bulk/confirm.html", form=form, order_ids=order_ids,
                               filters=filters, back_link=back, sample=sample_of(order_ids))
    if not form.validate():
        problems = " ".join(f"{field.label.text}: {error}" for field in form
                            for error in field.errors)
        flash(f"Nothing was cancelled. {problems or 'The form expired; please try again.'}",
              "danger")
        return redirect(back)

    cancel_request = CancelRequest(reason=form.reason.data,
                                   notes=(form.notes.data or "").strip() or None,
                                   notify_customer=bool(form.notify_customer.data))
    try:
        job = bulk.submit(current_user, order_ids, cancel_request, audit_context("panel"))
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(f"Nothing was cancelled: {exc.message}", "danger")
        return redirect(back)
    if job.status == BulkJobStatus.QUEUED.value:
        flash(f"Bulk cancellation #{job.id} of {job.total:,} order(s) is queued: maintenance is "
              "in progress. It starts by itself when maintenance ends.", "info")
    else:
        flash(f"Bulk cancellation #{job.id} started: {job.total:,} order(s) are being cancelled "
              "in the background. You may leave this page; Bulk jobs lists it.", "success")
    return redirect(url_for("orders.bulk_job", job_id=job.id))


def selected_orders(form):
    """(order ids, filters or None): the checked rows, or — with `all_matching` — every order
    the list's own query finds for the posted filters, so only the user's stores. Raises
    BadSelection saying what to do instead."""
    limit = current_app.config["BULK_MAX_ORDERS"]
    if form.all_matching.data != "1":
        ids = list(dict.fromkeys(_ids(request.form.getlist("order_ids"))))
        if not ids:
            raise BadSelection("select at least one order.")
        if len(ids) > limit:
            raise BadSelection(f"a bulk job takes at most {limit:,} orders; select fewer.")
        return ids, None

    filters = posted_filters()
    seen, newest = _int_field(form.matching_total), _int_field(form.max_order_id)
    if seen is None or newest is None:
        raise BadSelection("the selection is incomplete; reload the list and select again.")
    # Orders placed after the user looked are not theirs to sweep in.
    query = matching_orders(filters).where(Order.id <= newest)
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    if not total:
        raise BadSelection("no order matches these filters any more.")
    if total > limit:
        raise BadSelection(f"{total:,} orders match these filters and a bulk job takes at most "
                           f"{limit:,}. Narrow the filters (store, status, dates) and try again.")
    if total != seen:
        raise BadSelection(f"the orders matching these filters changed since the list was shown "
                           f"({total:,} match now, {seen:,} were selected). Check the list and "
                           "select them again.")
    ids = db.session.scalars(query.with_only_columns(Order.id)
                             .order_by(Order.placed_at.desc(), Order.id.desc())).all()
    return ids, filters


def posted_filters():
    """The list filters posted with "all matching". A filter the list would ignore (a store the
    user no longer works in, a date that does not parse) refuses the request rather than
    widening it to more orders than the user saw."""
    filters = ListFilters.from_args(request.form, {store.id for store in visible_stores()})
    posted = {name for name in FILTER_FIELDS if (request.form.get(name) or "").strip()}
    if posted != set(filters.as_args(page=None)):
        raise BadSelection("these filters are no longer valid (a store you no longer work in?). "
                           "Apply them again on the list.")
    return filters


def _ids(values):
    ids = []
    for value in values:
        try:
            order_id = int(value)
        except (TypeError, ValueError):
            raise BadSelection("the selection is not valid; reload the list and select "
                               "again.") from None
        if not 0 < order_id <= MAX_ID:
            raise BadSelection("the selection is not valid; reload the list and select again.")
        ids.append(order_id)
    return ids


def _int_field(field):
    return field.data if isinstance(field.data, int) and 0 <= field.data <= MAX_ID else None


def sample_of(order_ids, size=12):
    """A few of the chosen orders, for the confirmation page (visible ones only)."""
    if not order_ids:
        return []
    return db.session.scalars(visible_orders(select(Order), current_user)
                              .where(Order.id.in_(order_ids[:size]))
                              .options(joinedload(Order.store))
                              .order_by(Order.placed_at.desc(), Order.id.desc())).all()


# --- one job ---------------------------------------------------------------------------------

@bp.get("/bulk-jobs/<int:job_id>")
@requires("bulk_cancel")
def bulk_job(job_id):
    """The job as it is now; its script polls `bulk_job_progress` and reloads when it ends."""
    job = bulk.visible_job(current_user, job_id)
    pages = max((job.total + RESULTS_PER_PAGE - 1) // RESULTS_PER_PAGE, 1)
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    items = bulk.job_items(job, page, RESULTS_PER_PAGE)  # failed first, then waiting
    return render_template(
        "bulk/job.html", job=job, state=progress_of(job), items=items,
        visible=visible_ids([item.order_id for item in items]), page=page,
        pages=pages, first=(page - 1) * RESULTS_PER_PAGE + 1 if job.total else 0,
        last=min(page * RESULTS_PER_PAGE, job.total), retries=retries_of(job),
        page_url=lambda number: url_for("orders.bulk_job", job_id=job.id, page=number),
        retry_form=ActionForm())


@bp.get("/bulk-jobs/<int:job_id>/progress")
@requires("bulk_cancel")
def bulk_job_progress(job_id):
    """The job page's poll: counts only (JSON), for the signed-in user."""
    job = bulk.visible_job(current_user, job_id)
    return jsonify(progress_of(job))


@bp.post("/bulk-jobs/<int:job_id>/retry")
@requires("bulk_cancel")
def bulk_job_retry(job_id):
    job = bulk.visible_job(current_user, job_id)
    here = url_for("orders.bulk_job", job_id=job.id)
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "warning")
        return redirect(here)
    try:
        retry = bulk.retry_failed(job, current_user, audit_context("panel"))
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "danger")
        return redirect(here)
    flash(f"Retrying the {retry.total:,} failed order(s) of bulk cancellation #{job.id} as "
          f"bulk cancellation #{retry.id}.", "success")
    return redirect(url_for("orders.bulk_job", job_id=retry.id))


def progress_of(job):
    """`bulk.job_status`'s counts plus what the pages show: a percent that reaches 100 only when
    every order is done, whether the job has finished, and its status label."""
    state = bulk.job_status(job, per_page=0)
    state["percent"] = state["processed"] * 100 // job.total if job.total else 100
    state["finished"] = job.is_finished
    state["status_label"] = BulkJobStatus(job.status).label
    return state


def visible_ids(order_ids):
    """Which of these orders the user may open: another store's order is shown by id only."""
    if not order_ids:
        return set()
    return set(db.session.scalars(visible_orders(select(Order.id), current_user)
                                  .where(Order.id.in_(order_ids))).all())


def retries_of(job):
    query = select(BulkJob).where(BulkJob.retry_of_id == job.id)
    if not _can("administer"):
        query = query.where(BulkJob.user_id == current_user.id)
    return db.session.scalars(query.order_by(BulkJob.id)).all()


# --- the jobs list ---------------------------------------------------------------------------

@bp.get("/bulk-jobs")
@requires("bulk_cancel")
def bulk_jobs():
    """The user's bulk jobs, newest first (an admin sees everyone's); ?running=1 for the ones
    still at work."""
    everyone = _can("administer")
    running_only = request.args.get("running") == "1"
    query = select(BulkJob)
    if not everyone:
        query = query.where(BulkJob.user_id == current_user.id)
    if running_only:
        query = query.where(BulkJob.status.in_(UNFINISHED))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    pages = max((total + JOBS_PER_PAGE - 1) // JOBS_PER_PAGE, 1)
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    jobs = db.session.scalars(query.options(joinedload(BulkJob.user))
                              .order_by(BulkJob.id.desc())
                              .limit(JOBS_PER_PAGE).offset((page - 1) * JOBS_PER_PAGE)).all()
    return render_template(
        "bulk/jobs.html", jobs=jobs, states={job.id: progress_of(job) for job in jobs},
        everyone=everyone, running_only=running_only, total=total, page=page, pages=pages,
        first=(page - 1) * JOBS_PER_PAGE + 1 if total else 0,
        last=min(page * JOBS_PER_PAGE, total),
        page_url=lambda number: url_for("orders.bulk_jobs", page=number,
                                        running="1" if running_only else None))
