"""The orders panel: list, detail, the cancel dialog, retries and manual reconciliation.

Thin on purpose: parse the request, check the capability, call the domain (cancellation.*),
flash what happened and render. No rule of cancelling is decided here.
"""
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload, selectinload

from blueprints.api_common import audit_context
from blueprints.api_common.serializers import flags_dict
from blueprints.auth import safe_next
from blueprints.auth.permissions import permission, requires
from blueprints.orders.forms import (
    CHANNEL_LABELS,
    ActionForm,
    CancelOrderForm,
    ListFilters,
    PayOutForm,
    ReinstateForm,
    TakeBalanceForm,
)
from cancellation import (
    CancelDeskError,
    CancelRequest,
    ConcurrentModification,
    NotFound,
    ValidationFailed,
    get_visible_order,
    maintenance,
    orders as orders_query,
    outbox,
    oversight,
    payouts,
    policy,
    return_unreturned_stock,
    submit,
)
from cancellation.oversight import query_date, query_int
from cancellation.policy import cancel_offer_and_why
from cancellation.privacy import mask_contact, mask_email, mask_phone, redact
from cancellation.reasons import CancellationReason, label_for
from cancellation.reinstate import reinstate_eligibility, reinstate_order
from cancellation.service import later_in_series_counts
from models import (
    ApprovalRequest,
    AuditEvent,
    CancelJob,
    Cancellation,
    LoyaltyEntry,
    MailMessage,
    Notification,
    Order,
    Refund,
    StoreCreditEntry,
    User,
    db,
    money,
    utcnow,
)
from models.order import CANCELLABLE_STATUSES, OrderStatus

bp = Blueprint("orders", __name__)

AUDIT_TIMELINE_LIMIT = 200
MAILBOX_PER_PAGE = 25

# Maps CancelRequest.validate()'s field names onto the form's fields.
DOMAIN_FIELDS = {
    "reason": "reason", "notes": "notes", "scope": "scope",
    "customer_request.contact": "request_contact",
    "customer_request.channel": "request_channel",
    "customer_request.requested_at": "requested_at",
}


# --- presentation helpers (filters available to every template) -----------------------------

def _zone(name):
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@bp.app_template_filter("dollars")
def dollars(cents):
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    cents = abs(int(cents))
    return f"{sign}${cents // 100:,}.{cents % 100:02d}"


@bp.app_template_filter("when")
def when(moment, tz=None, fmt="%b %d, %Y %H:%M"):
    """A naive-UTC timestamp shown in the store's time zone (or UTC), with the zone's name."""
    if moment is None:
        return "—"
    local = moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(_zone(tz))
    return f"{local.strftime(fmt)} {local.tzname()}"


@bp.app_template_filter("humanize")
def humanize(code):
    return (code or "").replace("_", " ").capitalize()


@bp.app_template_filter("reason_label")
def reason_label(code):
    return label_for(code)


@bp.app_template_filter("channel_label")
def channel_label(code):
    return CHANNEL_LABELS.get(code, humanize(code))


@bp.app_context_processor
def _panel_context():
    return {"reason_hints": {reason.value: reason.examples for reason in CancellationReason},
            "cancellable_statuses": CANCELLABLE_STATUSES,
            # Functions, so a page that does not show them costs no query.
            "maintenance_banner": maintenance.banner, "maintenance_on": maintenance.is_on,
            "refund_plan": _refund_plan}


def _refund_plan(order):
    """What cancelling every open item of `order` refunds, per tender (impact.refund_split):
    the plan the cancellation itself writes. Reads only."""
    from cancellation.impact import plan_full_cancel, refund_split

    if order is None or not order.refundable_cents:
        return []
    return refund_split(plan_full_cancel(order, check_stock=False).refunds)


def store_local_to_utc(moment, tz):
    """A datetime-local value typed in store time, as the naive UTC the database keeps."""
    if moment is None:
        return None
    return moment.replace(tzinfo=_zone(tz)).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def store_now(tz):
    return datetime.now(_zone(tz)).replace(tzinfo=None, second=0, microsecond=0)


def current_path():
    """This page's path with its query string, for `next` fields and back links."""
    return request.full_path.rstrip("?")


def list_back_link(target=None):
    """Where "Back to Orders" goes: the list with the filters the user came from (`target`, or
    the `next` query argument) — only ever the orders list."""
    target = target or request.args.get("next")
    index = url_for("orders.index")
    if target and safe_next(target) == target and (target == index
                                                   or target.startswith(index + "?")):
        return target
    return index


def visible_stores():
    return policy.visible_stores(current_user)


# --- list ------------------------------------------------------------------------------------

def matching_orders(filters):
    """The list's orders: the user's stores, then the filters (unordered, unpaged). "Select all
    matching" of a bulk cancel resolves its orders from this same query."""
    return orders_query.matching_orders(current_user, filters)


@bp.get("/")
@requires("view_orders")
def index():
    stores = visible_stores()
    filters = ListFilters.from_args(request.args, {s.id for s in stores})
    per_page = current_app.config.get("ORDERS_PER_PAGE", 25)

    # The customers by id afterwards: joined, PostgreSQL hashes the whole customers table.
    listed = orders_query.order_page(
        current_user, filters, filters.page, per_page,
        options=(joinedload(Order.store), selectinload(Order.customer)),
        newest=current_app.config["BULK_MAX_ORDERS"] if _can("bulk_cancel") else None)
    orders, total, page, pages = listed.orders, listed.total, listed.page, listed.pages

    # One query for the whole page: which orders wait for a person (failed refund, ...).
    manual = set()
    if orders:
        manual = set(db.session.scalars(select(Cancellation.order_id).where(
            Cancellation.order_id.in_([o.id for o in orders]),
            or_(Cancellation.flag_manual_refund, Cancellation.flag_manual_notification,
                Cancellation.flag_inventory_reconciliation))).all())

    form = CancelOrderForm(formdata=None, next=current_path())
    return render_template(
        "orders/list.html", orders=orders, total=total, page=page, pages=pages,
        per_page=per_page, first=(page - 1) * per_page + 1 if total else 0,
        last=min(page * per_page, total), filters=filters, stores=stores,
        statuses=list(OrderStatus), manual=manual, cancel_form=form,
        page_url=lambda number: url_for("orders.index", **filters.as_args(page=number)),
        can_cancel=_can("request_cancellation"), search_contact=_can("view_customer_contact"),
        row_approval_why=approval_why_of(orders), series_later=later_in_series_counts(orders),
        **bulk_list_context(filters, total, listed.newest_id))


def approval_why_of(orders):
    """Per order of the page: why this user must ask for approval (the row menu then offers
    "Request approval"); orders they may cancel directly or not at all are left out."""
    user = current_user._get_current_object()  # the user once, not a proxy per row and check
    offers = {order.id: cancel_offer_and_why(user, order) for order in orders}
    return {order_id: why for order_id, (offer, why) in offers.items()
            if offer == "request_approval"}


def _can(capability):
    """For choosing what to show; the routes themselves check with requires()."""
    return bool(permission(capability).can())


# --- detail ----------------------------------------------------------------------------------

def load_order(order_id):
    """The order if the user may see it (else NotFound → 404), with what the detail page shows."""
    db.session.scalars(select(Order).where(Order.id == order_id).options(
        joinedload(Order.store), joinedload(Order.customer), selectinload(Order.items),
        selectinload(Order.cancellations).selectinload(Cancellation.items),
        selectinload(Order.cancellations).joinedload(Cancellation.actor),
        selectinload(Order.refunds), selectinload(Order.notifications),
        selectinload(Order.payments))).unique().all()
    return get_visible_order(current_user, order_id)


def audit_changes(event):
    """A compact before/after: the keys that changed, and the keys only one side has —
    customer contact details masked for roles that may not see them."""
    see_contact = _can("view_customer_contact")
    before = redact(event.before or {}, see_contact)
    after = redact(event.after or {}, see_contact)
    rows = []
    for key in list(before) + [k for k in after if k not in before]:
        old, new = before.get(key), after.get(key)
        if key in before and key in after and old == new:
            continue
        rows.append((key, _short(old) if key in before else None,
                     _short(new) if key in after else None))
    return rows


def _short(value):
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {v}" for k, v in value.items())
    elif isinstance(value, list):
        text = "; ".join(_short(v) for v in value)
    else:
        text = "—" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "…"


def render_detail(order, cancel_form=None, status=200):
    see_contact = _can("view_customer_contact")
    customer = order.customer
    contact = None
    if customer is not None:
        contact = {"email": customer.email if see_contact else mask_email(customer.email),
                   "phone": customer.phone if see_contact else mask_phone(customer.phone)}
    loyalty = db.session.scalars(select(LoyaltyEntry).where(LoyaltyEntry.order_id == order.id)
                                 .order_by(LoyaltyEntry.id)).all()
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.order_id == order.id)
                                .order_by(AuditEvent.seq.desc())
                                .limit(AUDIT_TIMELINE_LIMIT)).all()
    approvals = db.session.scalars(select(ApprovalRequest).where(
        ApprovalRequest.order_id == order.id).options(
        joinedload(ApprovalRequest.requested_by), joinedload(ApprovalRequest.decided_by))
        .order_by(ApprovalRequest.id.desc())).all()
    if cancel_form is None:
        cancel_form = new_cancel_form(order, next_path=current_path())
    series_count = None
    if order.series_id:
        series_count = db.session.scalar(select(func.count()).where(
            Order.series_id == order.series_id))
    return render_template(
        "orders/detail.html", order=order, **money_context(order), contact=contact,
        loyalty=loyalty, events=events, audit_changes=audit_changes, approvals=approvals,
        flags=flags_dict(order),
        cancel_form=cancel_form, action_form=ActionForm(), back_link=list_back_link(),
        series_count=series_count, mask_email=mask_email, mask_contact=mask_contact,
        approval_why=approval_why_of([order]).get(order.id),
        series_later=later_in_series_counts([order]), cancel_jobs=cancel_jobs_of(order)), status


def money_context(order):
    """What the detail page shows of the order's money: payments, store credit, the balance due
    form, and the reinstatement offer with what it would do."""
    credit_entries = db.session.scalars(select(StoreCreditEntry).where(
        StoreCreditEntry.order_id == order.id).order_by(StoreCreditEntry.id)).all()
    balance_form = None
    if (order.balance_due_cents or 0) > 0 and _can("pay_out_cash"):
        balance_form = TakeBalanceForm(formdata=None, tender="cash",
                                       amount=Decimal(money(order.balance_due_cents)))
    reinstate = None
    if order.status == OrderStatus.CANCELLED.value and _can("reinstate_order"):
        offer = reinstate_eligibility(order).to_dict()
        offer["effects"] = offer.get("effects") or {}
        deadline = _parse_iso(offer.get("deadline"))
        reinstate = {"offer": offer, "form": ReinstateForm(formdata=None), "deadline": deadline,
                     "left": f"{waited(utcnow(), deadline)} left" if deadline else ""}
    return {"credit_entries": credit_entries, "balance_form": balance_form,
            "reinstate": reinstate,
            "drawer_names": payouts.drawers_used([order.store_id]).get(order.store_id, [])}


def _parse_iso(value):
    """An ISO 8601 moment the domain answered ("2026-01-01T10:00:00Z") as naive UTC."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    return moment


def cancel_jobs_of(order, limit=10):
    """The order's asynchronous cancellations (API v2, and those queued in maintenance mode),
    newest first, with their requester: what the detail page's "Cancellation requests" shows."""
    jobs = db.session.scalars(select(CancelJob).where(CancelJob.order_id == order.id)
                              .order_by(CancelJob.id.desc()).limit(limit)).all()
    users = {u.id: u for u in db.session.scalars(select(User).where(
        User.id.in_({j.user_id for j in jobs})))} if jobs else {}
    return [(job, users.get(job.user_id)) for job in jobs]


def new_cancel_form(order, next_path):
    form = CancelOrderForm(formdata=None, version=order.version, next=next_path,
                           requested_at=store_now(order.store.timezone))
    if current_user.role == "customer_service":
        # Customer service cancels for customer requests only (SPEC §3): start there.
        form.reason.data = CancellationReason.CUSTOMER_REQUESTED.value
    return form


@bp.get("/orders/<int:order_id>")
@requires("view_orders")
def detail(order_id):
    return render_detail(load_order(order_id))


# --- cancel ----------------------------------------------------------------------------------

@bp.get("/orders/<int:order_id>/cancel")
@requires("request_cancellation")
def cancel_page(order_id):
    """The cancel form as a page of its own: the dialog without JavaScript, and error re-render."""
    order = load_order(order_id)
    next_path = request.args.get("next") or url_for("orders.detail", order_id=order.id)
    return render_cancel_page(order, new_cancel_form(order, safe_next(next_path)))


def render_cancel_page(order, form, message=None, status=200):
    return render_template("orders/cancel.html", order=order, form=form, message=message,
                           back_link=safe_next(form.next.data) if form.next.data
                           else url_for("orders.detail", order_id=order.id),
                           approval_why=approval_why_of([order]).get(order.id),
                           series_later=later_in_series_counts([order])), status


@bp.post("/orders/<int:order_id>/cancel")
@requires("request_cancellation")
def cancel(order_id):
    order = load_order(order_id)
    form = CancelOrderForm()
    detail_url = url_for("orders.detail", order_id=order.id)
    back = safe_next(form.next.data) if form.next.data else detail_url
    if not form.validate_on_submit():
        return render_cancel_page(order, form, "Please correct the highlighted fields.", 400)
    if order.status == OrderStatus.IN_PROGRESS.value and not form.confirm_in_progress.data:
        form.confirm_in_progress.errors = ["Confirm that you want to cancel an order whose "
                                           "fulfillment has started."]
        return render_cancel_page(
            order, form, "Fulfillment has started on this order. Confirm that you still want "
            "to cancel it.", 400)

    cancel_request = cancel_request_from(form, order)
    try:
        outcome = submit(order.id, current_user, cancel_request, audit_context("panel"))
        if outcome.queued:
            flash(maintenance.queued_message(outcome.job, order.number), "info")
            return redirect(back)
    except ValidationFailed as exc:
        for problem in exc.details.get("fields", []):
            field = getattr(form, DOMAIN_FIELDS.get(problem["field"], ""), None)
            if field is not None:
                field.errors = list(field.errors) + [problem["message"].capitalize()]
        return render_cancel_page(order, form, "The order was not cancelled: please correct "
                                  "the highlighted fields.", 400)
    except ConcurrentModification as exc:
        current = exc.details.get("current_version")
        flash(Markup("Order {} was changed by someone else while you were looking at it (you "
                     "saw version {}, it is now version {}). Nothing was cancelled. "
                     '<a href="{}" class="alert-link">Refresh</a> to see the changes and try '
                     "again.").format(order.number, form.version.data, current, detail_url),
              "warning")
        return redirect(back)
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(f"Order {order.number} was not cancelled: {exc.message}", "danger")
        return redirect(back)

    if outcome.needs_approval:
        approval = outcome.approval_request
        flash(" ".join([f"Approval request #{approval.id} filed for order {order.number}; it "
                        f"is not cancelled yet. Why: {' '.join(approval.why)}",
                        *series_sentences(outcome)]), "info")
        return redirect(back)
    flash(success_message(outcome), "success")
    return redirect(back)


def cancel_request_from(form, order):
    """The CancelRequest a submitted cancel dialog (or approval request form) asks for."""
    cancel_request = CancelRequest(
        reason=form.reason.data, notes=(form.notes.data or "").strip() or None,
        notify_customer=bool(form.notify_customer.data), expected_version=form.version.data,
        scope=form.scope.data if order.series_id and form.scope.data else "this_instance")
    if form.refund_to_store_credit.data:
        cancel_request.refund_to = "store_credit"
        cancel_request.refund_to_reason = (form.refund_to_reason.data or "").strip() or None
    if form.reason.data == CancellationReason.CUSTOMER_REQUESTED.value:
        # The dialog hides these fields for other reasons; what they hold then is not sent.
        cancel_request.request_contact = (form.request_contact.data or "").strip() or None
        cancel_request.request_channel = form.request_channel.data or None
        cancel_request.requested_at = store_local_to_utc(form.requested_at.data,
                                                         order.store.timezone)
    return cancel_request


REFUND_WAYS = {"card": "to the card (processor)", "debit": "to the debit account (processor)",
               "cash": "in cash — hand it over on the Payouts page",
               "store_credit": "as store credit (given)"}


def refund_summary(cancellation):
    """"Refund: $12.00 in cash — hand it over…, $5.00 to the card": where each tender's share
    goes, as staff must act on it."""
    shares = cancellation.refund_shares()
    if not shares:
        return f"Refund of {dollars(cancellation.refund_cents)} queued"
    return "Refund: " + ", ".join(f"{dollars(cents)} {REFUND_WAYS.get(tender, 'queued')}"
                                  for tender, cents in shares)


def success_message(outcome):
    cancellation = outcome.cancellation
    parts = [f"Order {outcome.order.number} cancelled."]
    if cancellation.refund_cents:
        parts.append(refund_summary(cancellation) + ";")
    else:
        parts.append("No payment to refund;")
    parts.append("customer will be notified." if cancellation.notify_customer
                 else "customer will not be notified.")
    if cancellation.flag_inventory_reconciliation:
        parts.append("Some items had no stock record: flagged for inventory reconciliation.")
    parts.extend(series_sentences(outcome))
    return " ".join(parts)


def series_sentences(outcome):
    """Scope all_future: which later orders of the series were cancelled, sent for approval,
    or could not be cancelled (and why)."""
    parts = []
    if outcome.also_cancelled:
        numbers = ", ".join(o.order.number for o in outcome.also_cancelled)
        parts.append(f"Also cancelled {len(outcome.also_cancelled)} later order(s) of the "
                     f"series: {numbers}.")
    if outcome.also_pending_approval:
        numbers = ", ".join(f"{o.order.number} (request #{o.approval_request.id})"
                            for o in outcome.also_pending_approval)
        parts.append(f"Sent {len(outcome.also_pending_approval)} later order(s) for approval: "
                     f"{numbers}.")
    if outcome.also_failed:
        reasons = "; ".join(f"{f['number']}: {f['message']}" for f in outcome.also_failed)
        parts.append(f"Not cancelled: {reasons}")
    return parts


# --- manual handling -------------------------------------------------------------------------

def _action(order_id, do, *, ok):
    """Shared shape of the detail page's buttons: visible order, CSRF, domain call, flash."""
    order = get_visible_order(current_user, order_id)
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "warning")
        return redirect(url_for("orders.detail", order_id=order.id))
    try:
        result = do(order)
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "danger")
    else:
        flash(ok(order, result), "success")
    return redirect(url_for("orders.detail", order_id=order.id))


def _row_of(model, order, row_id):
    row = db.session.get(model, row_id)
    if row is None or row.order_id != order.id:
        raise NotFound(f"{model.__name__} not found.")
    return row


@bp.post("/orders/<int:order_id>/refunds/<int:refund_id>/retry")
@requires("retry_delivery")
def retry_refund(order_id, refund_id):
    def do(order):
        _row_of(Refund, order, refund_id)
        return outbox.retry(Refund, refund_id, current_user, audit_context("panel"))
    return _action(order_id, do, ok=lambda order, refund: (
        f"Refund of {dollars(refund.amount_cents)} is already paid." if refund.status ==
        "succeeded" else f"Refund of {dollars(refund.amount_cents)} sent to the gateway again."))


@bp.post("/orders/<int:order_id>/refund")
@requires("retry_delivery")
def reprocess_refund(order_id):
    return _action(order_id, lambda order: outbox.reprocess_refund(
        order, current_user, audit_context("panel")),
        ok=lambda order, refunds: f"Refunds of order {order.number} sent to the gateway again.")


@bp.post("/orders/<int:order_id>/notifications/<int:notification_id>/retry")
@requires("retry_delivery")
def retry_notification(order_id, notification_id):
    def do(order):
        _row_of(Notification, order, notification_id)
        return outbox.retry(Notification, notification_id, current_user, audit_context("panel"))
    return _action(order_id, do, ok=lambda order, row: (
        "That notification was already sent." if row.status == "succeeded"
        else "Notification queued for another attempt."))


@bp.post("/orders/<int:order_id>/notifications/resend")
@requires("retry_delivery")
def resend_notification(order_id):
    return _action(order_id, lambda order: outbox.resend_notification(
        order, current_user, audit_context("panel")),
        ok=lambda order, row: f"Cancellation notice for order {order.number} queued to "
                              f"{mask_email(row.recipient) or 'the customer'}.")


@bp.post("/orders/<int:order_id>/return-stock")
@requires("reconcile_inventory")
def return_stock(order_id):
    return _action(order_id, lambda order: return_unreturned_stock(
        order, current_user, audit_context("panel")),
        ok=lambda order, returned: (
            f"Returned {sum(line['quantity'] for line in returned)} unit(s) to stock at "
            f"{order.store.name}." if returned else "Nothing left to return: every cancelled "
            "item is already back in stock."))


# --- reinstating, and money at the counter ---------------------------------------------------

def _detail_redirect(order_id):
    return redirect(url_for("orders.detail", order_id=order_id))


def _form_errors(form):
    return " ".join(error for errors in form.errors.values() for error in errors)


@bp.post("/orders/<int:order_id>/reinstate")
@requires("reinstate_order")
def reinstate(order_id):
    order = get_visible_order(current_user, order_id)
    number = order.number
    form = ReinstateForm()
    if not form.validate_on_submit():
        flash(f"Order {number} was not reinstated: "
              f"{_form_errors(form) or 'the form expired; please try again.'}", "warning")
        return _detail_redirect(order_id)
    try:
        order = reinstate_order(order_id, current_user, reason=form.reason.data.strip(),
                                context=audit_context("panel"),
                                use_store_credit=bool(form.use_store_credit.data))
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(f"Order {number} was not reinstated: {exc.message}",
              "warning" if exc.status in (409, 503) else "danger")
        return _detail_redirect(order_id)
    message = f"Order {number} reinstated: it is {humanize(order.status).lower()} again."
    if order.balance_due_cents:
        message += (f" The customer owes {dollars(order.balance_due_cents)}: take it at pickup "
                    "(Take payment on this page).")
    flash(message, "success")
    return _detail_redirect(order_id)


@bp.post("/orders/<int:order_id>/take-payment")
@requires("pay_out_cash")
def take_payment(order_id):
    order = get_visible_order(current_user, order_id)
    number = order.number
    form = TakeBalanceForm()
    if not form.validate_on_submit():
        flash(f"No payment taken: {_form_errors(form) or 'the form expired; please try again.'}",
              "warning")
        return _detail_redirect(order_id)
    cents = form.amount.data * 100
    if cents != cents.to_integral_value():
        flash("No payment taken: enter the amount in dollars and cents (e.g. 12.34).", "warning")
        return _detail_redirect(order_id)
    try:
        payment = payouts.take_balance(order_id, current_user, tender=form.tender.data,
                                       amount_cents=int(cents), drawer=form.drawer.data,
                                       context=audit_context("panel"))
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(f"No payment taken for order {number}: {exc.message}", "danger")
        return _detail_redirect(order_id)
    order = db.session.get(Order, order_id)
    where = f" into {payment.drawer}" if payment.drawer else ""
    flash(f"Took {dollars(payment.amount_cents)} by {payment.tender_label.lower()}{where} for "
          f"order {number}. Balance due now {dollars(order.balance_due_cents)}.", "success")
    return _detail_redirect(order_id)


@bp.app_template_filter("waited")
def waited(since, now=None):
    """How long ago, coarse: "4 min", "2 h 05 min", "3 d 4 h"."""
    if since is None:
        return "—"
    minutes = max(int(((now or utcnow()) - since).total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@bp.app_context_processor
def _payouts_context():
    # A function, so only a page that shows the navbar link runs its one COUNT.
    return {"payouts_waiting": lambda: payouts.awaiting_count(current_user)}


def _store_choice(stores, value):
    store_id = query_int(value)
    return store_id if store_id in {store.id for store in stores} else None


@bp.get("/payouts")
@requires("pay_out_cash")
def payouts_page():
    stores = visible_stores()
    store_id = _store_choice(stores, request.args.get("store"))
    waiting = payouts.awaiting(current_user, store_id)
    by_store = {}
    for row in waiting:
        by_store.setdefault(row.store_id, []).append(row)
    groups = [(store, by_store[store.id]) for store in stores if store.id in by_store]
    return render_template(
        "orders/payouts.html", groups=groups, stores=stores, store_id=store_id,
        total=len(waiting), total_cents=sum(row.amount_cents for row in waiting),
        drawers=payouts.drawers_used([store.id for store, _ in groups]), form=PayOutForm(),
        now=utcnow(), next_path=current_path())


@bp.post("/payouts/<int:refund_id>/paid-out")
@requires("pay_out_cash")
def paid_out(refund_id):
    form = PayOutForm()
    back = safe_next(request.form.get("next") or url_for("orders.payouts_page"))
    if not form.validate_on_submit():
        flash(f"Nothing was paid out: {_form_errors(form) or 'the form expired; try again.'}",
              "warning")
        return redirect(back)
    try:
        refund = payouts.pay_out(refund_id, current_user, drawer=form.drawer.data,
                                 context=audit_context("panel"))
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "warning" if exc.status == 409 else "danger")
        return redirect(back)
    order = refund.order
    customer = order.customer.name if order.customer else "the customer"
    flash(f"Paid out {dollars(refund.amount_cents)} in cash to {customer} from {refund.drawer} "
          f"(order {order.number}).", "success")
    return redirect(back)


def _report_args():
    """The report's store (the first the user sees unless chosen) and business day (today in
    that store's time unless chosen)."""
    stores = visible_stores()
    if not stores:
        raise NotFound("You work in no store.")
    store_id = query_int(request.args.get("store"))
    store_id = store_id if store_id is not None else stores[0].id
    day = query_date(request.args.get("day"))
    if day is None:
        store = next((s for s in stores if s.id == store_id), stores[0])
        day = store_now(store.timezone).date()
    return stores, store_id, day


@bp.get("/payouts/report")
@requires("pay_out_cash")
def payouts_report():
    stores, store_id, day = _report_args()
    report = payouts.drawer_report(current_user, store_id, day)
    return render_template("orders/payouts_report.html", report=report, stores=stores,
                           csv_url=url_for("orders.payouts_report_csv", store=report.store.id,
                                           day=day.isoformat()))


@bp.get("/payouts/report.csv")
@requires("pay_out_cash")
def payouts_report_csv():
    _stores, store_id, day = _report_args()
    report = payouts.drawer_report(current_user, store_id, day)
    slug = "".join(c if c.isalnum() else "-" for c in report.store.name.lower()).strip("-")
    response = Response(
        "".join(oversight.csv_stream(payouts.REPORT_CSV_HEADER, payouts.report_csv_rows(report))),
        mimetype="text/csv")
    response.headers["Content-Disposition"] = (f'attachment; filename="cash-payouts-{slug}-'
                                               f'{day.isoformat()}.csv"')
    response.headers["Cache-Control"] = "no-store"
    return response


# --- simulated mail relay --------------------------------------------------------------------

@bp.get("/mailbox")
@requires("view_mailbox")
def mailbox():
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    total = db.session.scalar(select(func.count()).select_from(MailMessage))
    pages = max((total + MAILBOX_PER_PAGE - 1) // MAILBOX_PER_PAGE, 1)
    page = min(page, pages)
    messages = db.session.scalars(select(MailMessage)
                                  .order_by(MailMessage.created_at.desc(), MailMessage.id.desc())
                                  .limit(MAILBOX_PER_PAGE)
                                  .offset((page - 1) * MAILBOX_PER_PAGE)).all()
    return render_template("orders/mailbox.html", messages=messages, total=total, page=page,
                           page_url=lambda number: url_for("orders.mailbox", page=number),
                           pages=pages, first=(page - 1) * MAILBOX_PER_PAGE + 1 if total else 0,
                           last=min(page * MAILBOX_PER_PAGE, total))


# The bulk pages (seed A1) live in their own module; importing it registers its routes on bp.
# "Modify Order" (partial cancellation, seed A3): its routes register on bp too.
from blueprints.orders import modify as _modify_routes  # noqa: E402,F401
from blueprints.orders.bulk import list_context as bulk_list_context  # noqa: E402
