"""Forms of the orders panel: list filters, the cancel dialog, and the CSRF-only action forms."""
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    DecimalField,
    HiddenField,
    IntegerField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    InputRequired,
    Length,
    NumberRange,
    Optional,
    StopValidation,
    ValidationError,
)
from wtforms.widgets import HiddenInput

from cancellation.oversight import query_date, query_int, query_text
from cancellation.reasons import REQUEST_CHANNELS, CancellationReason
from models import Tender
from models.order import OrderStatus

CHANNEL_LABELS = {"phone": "Phone", "email": "E-mail", "in_store": "In store", "chat": "Chat"}

SCOPE_CHOICES = [
    SelectChoice("this_instance", "This order only"),
    SelectChoice("all_future", "This and all future orders of the series"),
]


def within_the_calendar(form, field):
    """A moment typed in store time is converted to UTC: a day away from either end of the
    calendar, it still is a date in every time zone."""
    if field.data is not None and not date.min < field.data.date() < date.max:
        raise ValidationError(f"Enter a date between {date.min + timedelta(days=1)} and "
                              f"{date.max - timedelta(days=1)}.")


def a_sum_of_money(form, field):
    """A finite amount below a billion dollars — before NumberRange, which cannot compare a
    signalling NaN, and before the view multiplies it into cents."""
    value = field.data
    if value is None or not value.is_finite() or abs(value) >= Decimal("1e9"):
        raise StopValidation("Enter an amount in dollars and cents, e.g. 12.34.")


class CancelOrderForm(FlaskForm):
    """The cancel dialog. Business rules (which fields a reason needs) live in CancelRequest."""

    reason = SelectField(
        "Reason",
        choices=[SelectChoice("", "Select a reason…")]
        + [SelectChoice(r.value, r.label) for r in CancellationReason],
        validators=[InputRequired("Choose a cancellation reason.")])
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=2000)],
                          render_kw={"rows": 3, "maxlength": 2000,
                                     "placeholder": "Optional: what happened, who decided"})
    request_contact = StringField("Customer contact", validators=[Optional(), Length(max=254)],
                                  render_kw={"placeholder": "Phone number or e-mail they used"})
    request_channel = SelectField(
        "Channel", choices=[SelectChoice("", "—")]
        + [SelectChoice(c, CHANNEL_LABELS[c]) for c in REQUEST_CHANNELS],
        validators=[Optional()])
    requested_at = DateTimeLocalField("Requested at", format=["%Y-%m-%dT%H:%M",
                                                              "%Y-%m-%dT%H:%M:%S"],
                                      validators=[Optional(), within_the_calendar])
    notify_customer = BooleanField("Notify the customer by e-mail", default=True)
    refund_to_store_credit = BooleanField("Refund as store credit instead (the customer agreed)")
    refund_to_reason = StringField("Why store credit", validators=[Optional(), Length(max=500)],
                                   render_kw={"maxlength": 500,
                                              "placeholder": "e.g. customer asked at the counter"})
    scope = RadioField("Recurring order", choices=SCOPE_CHOICES, default="this_instance",
                       validators=[Optional()])
    confirm_in_progress = BooleanField("I understand fulfillment has started and still want to "
                                       "cancel this order")
    version = IntegerField(widget=HiddenInput(), validators=[Optional()])
    next = HiddenField()


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token is needed."""


class PayOutForm(FlaskForm):
    """"Paid out" on /payouts: which drawer the cash came from (cancellation.payouts checks it
    again: 1-40 printable characters)."""

    drawer = StringField("Drawer", validators=[InputRequired("Say which drawer the cash comes "
                                                             "from."), Length(max=40)],
                         render_kw={"maxlength": 40, "autocomplete": "off",
                                    "placeholder": "e.g. Drawer 1"})


class TakeBalanceForm(FlaskForm):
    """"Take payment" on an order with a balance due."""

    tender = SelectField("Paid with", choices=[SelectChoice(t.value, t.label) for t in Tender],
                         validators=[InputRequired("Choose how the customer pays.")])
    amount = DecimalField("Amount ($)", places=2,
                          validators=[InputRequired("Enter the amount paid."), a_sum_of_money,
                                      NumberRange(min=0.01, message="Enter at least $0.01.")],
                          render_kw={"step": "0.01", "min": "0.01", "inputmode": "decimal"})
    drawer = StringField("Drawer (cash)", validators=[Optional(), Length(max=40)],
                         render_kw={"maxlength": 40, "autocomplete": "off",
                                    "placeholder": "e.g. Drawer 1"})


class ReinstateForm(FlaskForm):
    """The "Reinstate" confirmation: why, and whether store credit pays the balance due."""

    reason = TextAreaField("Why reinstate this order?",
                           validators=[InputRequired("Say why the order is reinstated."),
                                       Length(max=1000)],
                           render_kw={"rows": 2, "maxlength": 1000,
                                      "placeholder": "e.g. Customer changed their mind at the "
                                                     "counter"})
    use_store_credit = BooleanField("Use the customer's store credit for the balance due")


class ModifyOrderForm(CancelOrderForm):
    """The "Modify Order" dialog (partial cancellation). The quantities come as `qty-<item id>`
    inputs, one per open item (the view reads them); `mode` is "approval" when the dialog was
    the approval request form, which needs the justification."""

    justification = TextAreaField(
        "Justification", validators=[Optional(), Length(max=2000)],
        render_kw={"rows": 3, "maxlength": 2000,
                   "placeholder": "Why must these items be cancelled? The approver reads this."})
    mode = HiddenField()


class BulkCancelForm(FlaskForm):
    """The list's "Bulk Actions → Cancel Orders" dialog. The orders come as `order_ids` (the
    checked rows) or, with `all_matching`, as the list's filters; the view reads those.

    No "Customer requested": that reason needs each customer's own contact details and the time
    of their request, which one dialog for many orders cannot carry.
    """

    reason = SelectField(
        "Reason",
        choices=[SelectChoice("", "Select a reason…")]
        + [SelectChoice(r.value, r.label) for r in CancellationReason
           if r is not CancellationReason.CUSTOMER_REQUESTED],
        validators=[InputRequired("Choose a cancellation reason.")])
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=2000)],
                          render_kw={"rows": 3, "maxlength": 2000,
                                     "placeholder": "Optional: what happened, who decided"})
    notify_customer = BooleanField("Notify the customers by e-mail", default=True)
    all_matching = HiddenField()
    # What the user saw when choosing "all matching": the count they confirmed, and the newest
    # order then, so an order placed since is never swept in.
    matching_total = IntegerField(widget=HiddenInput(), validators=[Optional()])
    max_order_id = IntegerField(widget=HiddenInput(), validators=[Optional()])
    confirmed = HiddenField()
    next = HiddenField()


@dataclass
class ListFilters:
    """The orders list's query string, validated: what cancellation.orders.matching_orders
    reads."""

    q: str | None = None
    status: str | None = None
    store_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    page: int = 1
    billing_hold: bool | None = None
    shipment_status: str | None = None
    payment_status: str | None = None

    @classmethod
    def from_args(cls, args, visible_store_ids):
        """Ignore what cannot be parsed or is not allowed, so a bookmark never errors out."""
        status = args.get("status") or None
        if status not in {s.value for s in OrderStatus}:
            status = None
        store_id = query_int(args.get("store"))
        if store_id not in visible_store_ids:
            store_id = None
        return cls(q=query_text(args.get("q"), 100), status=status, store_id=store_id,
                   date_from=query_date(args.get("from"), "from"),
                   date_to=query_date(args.get("to"), "to"),
                   page=max(query_int(args.get("page"), 100000) or 1, 1))

    @property
    def active(self):
        return any((self.q, self.status, self.store_id, self.date_from, self.date_to))

    def as_args(self, **changes):
        """Query-string args for url_for, e.g. the next page's link."""
        args = {"q": self.q, "status": self.status, "store": self.store_id,
                "from": self.date_from.isoformat() if self.date_from else None,
                "to": self.date_to.isoformat() if self.date_to else None,
                "page": self.page if self.page > 1 else None}
        args.update(changes)
        return {k: v for k, v in args.items() if v not in (None, "")}

