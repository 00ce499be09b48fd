"""The order detail page's "Modify Order" (seed A3): cancel some quantities of some items.

The dialog (templates/orders/_modify_dialog.html) and its full-page form (modify.html, also what
works without JavaScript and where errors are shown) post here; the live summary asks
`modify_preview`. Thin, like the rest of the blueprint: the rules live in cancellation.partial.
"""
from flask import flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from blueprints.api_common import audit_context
from blueprints.auth import safe_next
from blueprints.auth.permissions import requires
from blueprints.orders import (
    DOMAIN_FIELDS,
    bp,
    cancel_request_from,
    current_path,
    load_order,
    store_now,
)
from blueprints.orders.forms import ModifyOrderForm
from cancellation import (
    CancelDeskError,
    ConcurrentModification,
    PartialCancelRequest,
    ValidationFailed,
    get_visible_order,
    maintenance,
    submit_items,
)
from cancellation.partial import describe, preview_items, request_summary
from cancellation.policy import approval_reasons, cancel_offer
from cancellation.reasons import CancellationReason

QUANTITY_PREFIX = "qty-"


def modify_offer(order):
    """What the detail page offers: None, "cancel" (remove items directly) or
    "request_approval" — whenever the user may cancel or ask for this order and something of
    it is still open. Buttons only; the routes check again."""
    if order.open_quantity <= 0:
        return None
    return cancel_offer(current_user, order)


@bp.app_context_processor
def _modify_context():
    def modify_dialog_form(order):
        """The dialog's form for the detail page, or None when "Modify Order" is not offered."""
        if modify_offer(order) is None:
            return None
        return new_modify_form(order, current_path())

    def partial_request_summary(approval):
        """For the approval pages: the items a partial request would cancel (None: whole order)."""
        return request_summary(approval.order, approval.payload or {})

    return {"modify_dialog_form": modify_dialog_form,
            "partial_request_summary": partial_request_summary}


def new_modify_form(order, next_path):
    form = ModifyOrderForm(formdata=None, version=order.version, next=next_path,
                           requested_at=store_now(order.store.timezone),
                           mode="approval" if approval_reasons(current_user, order) else "cancel")
    if current_user.role == "customer_service":
        form.reason.data = CancellationReason.CUSTOMER_REQUESTED.value
    return form


def quantities_from(formdata, order):
    """([(item id, quantity)], {item id: problem}) from the `qty-<item id>` inputs. Blank and 0
    mean "keep"; whether a quantity is allowed is the domain's to say."""
    lines, problems = [], {}
    for item in order.items:
        raw = (formdata.get(f"{QUANTITY_PREFIX}{item.id}") or "").strip()
        if raw in ("", "0"):
            continue
        try:
            quantity = int(raw)
        except ValueError:
            problems[item.id] = "Enter a whole number."
            continue
        if quantity < 0:
            problems[item.id] = f"Enter 0 to {max(item.open_quantity, 0)}."
        elif quantity:
            lines.append((item.id, quantity))
    return lines, problems


def line_problems_by_item(fields, lines):
    """The domain's `items.<n>.<field>` problems, keyed by the item id of line n."""
    problems = {}
    for problem in fields:
        parts = problem["field"].split(".")
        if parts[0] == "items" and len(parts) > 1 and parts[1].isdigit() \
                and int(parts[1]) < len(lines):
            problems[lines[int(parts[1])][0]] = problem["message"].capitalize()
    return problems


def render_modify_page(order, form, *, message=None, line_errors=None, quantities=None,
                       status=200):
    # The form is what policy says now (it may have changed since the dialog was opened).
    approval_why = approval_reasons(current_user, order) or None
    form.mode.data = "approval" if approval_why else "cancel"
    return render_template(
        "orders/modify.html", order=order, form=form, message=message,
        line_errors=line_errors or {}, quantities=quantities or {}, approval_why=approval_why,
        back_link=safe_next(form.next.data) if form.next.data
        else url_for("orders.detail", order_id=order.id)), status


@bp.get("/orders/<int:order_id>/modify")
@requires("request_cancellation")
def modify_page(order_id):
    """The dialog as a page of its own: without JavaScript, and where errors are re-rendered."""
    order = load_order(order_id)
    next_path = request.args.get("next") or url_for("orders.detail", order_id=order.id)
    return render_modify_page(order, new_modify_form(order, safe_next(next_path)))


@bp.get("/orders/<int:order_id>/modify/preview")
@requires("request_cancellation")
def modify_preview(order_id):
    """The dialog's live summary, computed by the domain from the quantities chosen. Reads
    only (a GET: nothing to protect with a CSRF token)."""
    order = get_visible_order(current_user, order_id)
    lines, problems = quantities_from(request.args, order)
    answer = preview_items(current_user, order, lines,
                           notify=request.args.get("notify_customer") not in (None, "", "n"))
    line_errors = {**line_problems_by_item(answer.pop("fields"), lines), **problems}
    answer["line_errors"] = {str(item_id): text for item_id, text in line_errors.items()}
    answer["ok"] = answer["ok"] and not problems
    return jsonify(answer)


@bp.post("/orders/<int:order_id>/modify")
@requires("request_cancellation")
def modify(order_id):
    order = load_order(order_id)
    form = ModifyOrderForm()
    detail_url = url_for("orders.detail", order_id=order.id)
    back = safe_next(form.next.data) if form.next.data else detail_url
    asking = form.mode.data == "approval"
    lines, line_errors = quantities_from(request.form, order)
    quantities = {item_id: quantity for item_id, quantity in lines}
    quantities.update({item_id: request.form.get(f"{QUANTITY_PREFIX}{item_id}")
                       for item_id in line_errors})

    def again(message, status=400):
        return render_modify_page(order, form, message=message, line_errors=line_errors,
                                  quantities=quantities, status=status)

    if not form.validate_on_submit() or line_errors:
        return again("Nothing was changed: please correct the highlighted fields.")
    if not lines:
        return again("Nothing was changed: choose how many of which items to remove.")
    if order.status == "in_progress" and not asking and not form.confirm_in_progress.data:
        form.confirm_in_progress.errors = ["Confirm that you want to remove items from an order "
                                           "whose fulfillment has started."]
        return again("Fulfillment has started on this order. Confirm that you still want to "
                     "remove these items.")

    partial_request = PartialCancelRequest(**{**vars(cancel_request_from(form, order)),
                                              "scope": "this_instance", "lines": lines})
    try:
        outcome = submit_items(order.id, current_user, partial_request, audit_context("panel"),
                               justification=(form.justification.data or "") if asking
                               else None)
    except ValidationFailed as exc:
        fields = exc.details.get("fields", [])
        line_errors.update(line_problems_by_item(fields, lines))
        for problem in fields:
            name = "justification" if problem["field"] == "justification" \
                else DOMAIN_FIELDS.get(problem["field"], "")
            field = getattr(form, name, None)
            if field is not None:
                field.errors = list(field.errors) + [problem["message"].capitalize()]
        return again("Nothing was changed: please correct the highlighted fields.")
    except ConcurrentModification as exc:
        flash(Markup("Order {} was changed by someone else while you were looking at it (you "
                     "saw version {}, it is now version {}). Nothing was changed. "
                     '<a href="{}" class="alert-link">Refresh</a> to see the changes and try '
                     "again.").format(order.number, form.version.data,
                                      exc.details.get("current_version"), detail_url),
              "warning")
        return redirect(back)
    except CancelDeskError as exc:
        if exc.status == 404:
            raise
        flash(f"No items of order {order.number} were cancelled: {exc.message}",
              "info" if exc.code == "approval_not_required" else "danger")
        return redirect(back)

    if outcome.needs_approval:
        approval = outcome.approval_request
        if not outcome.created:
            flash(f"You already asked to cancel these items of order {order.number} (request "
                  f"#{approval.id}); it is waiting for an approver.", "info")
        else:
            flash(Markup('Approval request #{} for items of order {} sent to the approvers. '
                         'Nothing is cancelled until one of them approves; follow it in '
                         '<a href="{}" class="alert-link">My requests</a>.').format(
                approval.id, order.number, url_for("approvals.index", tab="mine")), "success")
    elif outcome.job is not None and outcome.job.status == maintenance.QUEUED:
        flash(maintenance.queued_message(outcome.job, order.number), "info")
    elif outcome.job is not None:
        flash(f"{len(lines)} lines of order {order.number} are being cancelled in the "
              f"background (job #{outcome.job.id}); refresh in a moment to see the result.",
              "info")
    else:
        flash(describe(outcome.cancellation), "success")
    return redirect(back)
