"""Money at the counter: cash refunds handed over (and the day's drawer report), and a balance
due taken at pickup.

A cancellation writes a cash refund as `awaiting_payout` (cancellation/effects.py); it is paid
only when staff confirm they handed the cash over, from which drawer. That confirmation is a
compare-and-set on the refund row, as a reinstatement's void is: of two clicks, two clerks, or a
clerk and a reinstatement, exactly one moves the refund and the other gets 409.
"""
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from cancellation.audit import record
from cancellation.errors import (
    ConcurrentModification,
    DeliveryClaimed,
    Forbidden,
    InvalidState,
    NotFound,
    ValidationFailed,
)
from cancellation.locks import lock_order
from cancellation.oversight import compliance_store, store_day_bounds
from cancellation.policy import can, require_visible, scoped
from models import (
    TENDERS,
    Customer,
    Order,
    Payment,
    Refund,
    StoreCreditEntry,
    StoreCreditKind,
    Tender,
    User,
    db,
    isoformat,
    money,
    utcnow,
)
from models.delivery import DeliveryStatus
from models.order import PaymentStatus

CASH = Tender.CASH.value
DRAWER_MAX = 40
AWAITING_LIMIT = 500  # a counter never has this many; a page that long would be no use anyway


# --- drawers ---------------------------------------------------------------------------------

def clean_drawer(value, *, required=True):
    """The drawer as staff typed it, trimmed: 1-40 printable characters (None when not required
    and blank). A drawer name ends up on reports and CSV exports, so no control characters."""
    drawer = (value or "").strip()
    if not drawer:
        if not required:
            return None
        raise ValidationFailed("Say which drawer the cash comes from (e.g. \"Drawer 1\").",
                               details={"fields": [{"field": "drawer", "message": "is required"}]})
    if len(drawer) > DRAWER_MAX or not drawer.isprintable():
        raise ValidationFailed(
            f"A drawer name is at most {DRAWER_MAX} printable characters.",
            details={"fields": [{"field": "drawer", "message": "is not a drawer name"}]})
    return drawer


def drawers_used(store_ids):
    """{store id: [drawer names used before there, most used first]}: the payout form's
    suggestions. One query over the cash refunds paid out and the counter payments taken."""
    if not store_ids:
        return {}
    refunds = (select(Order.store_id, Refund.drawer.label("drawer"))
               .join(Order, Order.id == Refund.order_id)
               .where(Refund.drawer.is_not(None), Order.store_id.in_(store_ids)))
    payments = (select(Order.store_id, Payment.drawer.label("drawer"))
                .join(Order, Order.id == Payment.order_id)
                .where(Payment.drawer.is_not(None), Order.store_id.in_(store_ids)))
    used = refunds.union_all(payments).subquery()
    found = defaultdict(list)
    for store_id, drawer, _uses in db.session.execute(
            select(used.c.store_id, used.c.drawer, func.count())
            .group_by(used.c.store_id, used.c.drawer)
            .order_by(used.c.store_id, func.count().desc(), used.c.drawer)):
        found[store_id].append(drawer)
    return dict(found)


# --- cash refunds at the counter -------------------------------------------------------------

def _refund_for(actor, refund_id):
    """The refund if the actor may see its order's store; 404 otherwise (alike for a refund that
    does not exist and one of another store)."""
    refund = db.session.get(Refund, refund_id)
    if refund is None:
        raise NotFound("Refund not found.")
    require_visible(actor, db.session.get(Order, refund.order_id))
    return refund


def _store_time(moment, timezone):
    if moment is None:
        return "an unknown time"
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    local = moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
    return f"{local.strftime('%b %d, %Y %H:%M')} {local.tzname()}"


def _why_not_payable(refund, order):
    """What the refund is now, for the caller that lost (or never had) the chance to pay it."""
    amount = f"${money(refund.amount_cents)}"
    if refund.status == DeliveryStatus.SUCCEEDED.value and refund.paid_out_by_id:
        who = db.session.get(User, refund.paid_out_by_id)
        return (f"The {amount} cash refund of order {order.number} was already paid out by "
                f"{who.name if who else 'someone else'} from {refund.drawer} at "
                f"{_store_time(refund.succeeded_at, order.store.timezone)}. "
                "Do not hand the cash over again.")
    if refund.status == DeliveryStatus.VOIDED.value:
        return (f"The {amount} refund of order {order.number} was voided: the order was "
                "reinstated. Nothing is to be paid out.")
    return f"The {amount} refund of order {order.number} is {refund.status.replace('_', ' ')}."


def pay_out(refund_id, actor, *, drawer, context=None):
    """Record that a cash refund was handed to the customer from `drawer`. 409 when it was
    already paid out or voided — by another click, another clerk or a reinstatement."""
    try:
        refund = _refund_for(actor, refund_id)
        order = lock_order(refund.order_id)  # the order first, as every writer of its rows
        if not can(actor, "pay_out_cash"):
            raise Forbidden("You do not have permission to pay out cash refunds.")
        if refund.method != CASH:
            raise InvalidState(f"Refund #{refund.id} goes back by "
                               f"{(refund.method or 'card').replace('_', ' ')}, not cash: it is "
                               "not paid out at the counter.")
        drawer = clean_drawer(drawer)
        now = utcnow()
        won = db.session.execute(
            update(Refund).where(Refund.id == refund.id,
                                 Refund.status == DeliveryStatus.AWAITING_PAYOUT.value,
                                 Refund.method == CASH)
            .values(status=DeliveryStatus.SUCCEEDED.value, succeeded_at=now, updated_at=now,
                    paid_out_by_id=actor.id, drawer=drawer, next_attempt_at=None)
            .execution_options(synchronize_session=False)).rowcount == 1
        if not won:
            db.session.rollback()
            refund = db.session.get(Refund, refund_id, populate_existing=True)
            raise DeliveryClaimed(_why_not_payable(refund, refund.order),
                                  code="already_paid_out"
                                  if refund.status == DeliveryStatus.SUCCEEDED.value else None)
        record(actor, "refund.paid_out", target_type="refund", target_id=refund.id,
               store_id=order.store_id, order_id=order.id,
               before={"status": DeliveryStatus.AWAITING_PAYOUT.value},
               after={"amount": money(refund.amount_cents), "drawer": drawer}, context=context)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return db.session.get(Refund, refund_id)


@dataclass
class Waiting:
    """One cash refund waiting at the counter."""

    refund_id: int
    amount_cents: int
    waiting_since: object  # naive UTC: when the cancellation wrote it
    order_id: int
    order_number: str
    store_id: int
    store_name: str
    timezone: str
    customer_name: str | None


def _awaiting_query(actor, store_id=None):
    query = (select(Refund.id)
             .join(Order, Order.id == Refund.order_id)
             .where(Refund.status == DeliveryStatus.AWAITING_PAYOUT.value,
                    Refund.method == CASH))
    query = scoped(query, actor, Order.store_id)
    if store_id is not None:
        query = query.where(Order.store_id == store_id)
    return query


def awaiting(actor, store_id=None, limit=AWAITING_LIMIT):
    """The cash refunds waiting to be paid out in the stores the actor sees (or one of them),
    oldest first."""
    ids = _awaiting_query(actor, store_id).subquery()
    rows = db.session.execute(
        select(Refund, Order, Customer)
        .join(Order, Order.id == Refund.order_id)
        .outerjoin(Customer, Customer.id == Order.customer_id)
        .where(Refund.id.in_(select(ids.c.id)))
        .options(joinedload(Order.store))
        .order_by(Refund.created_at, Refund.id).limit(limit)).all()
    return [Waiting(refund.id, refund.amount_cents, refund.created_at, order.id, order.number,
                    order.store_id, order.store.name, order.store.timezone,
                    customer.name if customer else None)
            for refund, order, customer in rows]


BADGE_CAP = 100  # the navbar shows "99+" beyond: every page counts at most this many rows


def awaiting_count(actor, cap=BADGE_CAP):
    """How many cash refunds wait in the actor's stores, up to `cap`: one COUNT over at most
    `cap` rows (the navbar's badge, on every page — a store that never pays out must not make
    every page slower)."""
    return db.session.scalar(select(func.count()).select_from(
        _awaiting_query(actor).limit(cap).subquery()))


# --- the day's drawer report -----------------------------------------------------------------

@dataclass
class Total:
    key: object
    label: str
    count: int = 0
    total_cents: int = 0


@dataclass
class DrawerReport:
    store: object
    day: object
    rows: list = field(default_factory=list)  # [PaidOut]
    by_drawer: list = field(default_factory=list)  # [Total]
    by_staff: list = field(default_factory=list)  # [Total]

    @property
    def count(self):
        return len(self.rows)

    @property
    def total_cents(self):
        return sum(row.amount_cents for row in self.rows)


@dataclass
class PaidOut:
    refund_id: int
    paid_out_at: object  # naive UTC
    drawer: str
    staff_id: int | None
    staff_name: str
    order_id: int
    order_number: str
    customer_name: str | None
    amount_cents: int


REPORT_CSV_HEADER = ["row", "store", "business_date", "paid_out_at_local", "paid_out_at_utc",
                     "drawer", "paid_out_by", "order_number", "customer", "refund_id", "count",
                     "amount"]


def drawer_report(actor, store_id, day):
    """The cash refunds paid out at a store on one business day (store time), with the totals
    per drawer and per member of staff. 404 for a store the actor does not see."""
    store = compliance_store(actor, store_id)
    since, until = store_day_bounds(store, day)
    found = db.session.execute(
        select(Refund, Order, Customer, User)
        .join(Order, Order.id == Refund.order_id)
        .outerjoin(Customer, Customer.id == Order.customer_id)
        .outerjoin(User, User.id == Refund.paid_out_by_id)
        .where(Order.store_id == store.id, Refund.method == CASH,
               Refund.status == DeliveryStatus.SUCCEEDED.value,
               Refund.paid_out_by_id.is_not(None),
               Refund.succeeded_at >= since, Refund.succeeded_at < until)
        .order_by(Refund.succeeded_at, Refund.id)).all()
    report = DrawerReport(store, day)
    drawers, staff = {}, {}
    for refund, order, customer, user in found:
        row = PaidOut(refund.id, refund.succeeded_at, refund.drawer or "—", refund.paid_out_by_id,
                      user.name if user else "—", order.id, order.number,
                      customer.name if customer else None, refund.amount_cents)
        report.rows.append(row)
        for totals, key, label in ((drawers, row.drawer, row.drawer),
                                   (staff, row.staff_id, row.staff_name)):
            total = totals.setdefault(key, Total(key, label))
            total.count += 1
            total.total_cents += row.amount_cents
    report.by_drawer = sorted(drawers.values(), key=lambda t: t.label.lower())
    report.by_staff = sorted(staff.values(), key=lambda t: t.label.lower())
    return report


def report_csv_rows(report):
    """The report as CSV rows (REPORT_CSV_HEADER): each payout, then the totals per drawer, per
    member of staff and for the day. Amounts are numbers; names are text the CSV writer makes
    spreadsheet-safe."""
    store, day = report.store, report.day.isoformat()
    try:
        zone = ZoneInfo(store.timezone or "UTC")
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    for row in report.rows:
        local = row.paid_out_at.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
        yield ["payout", store.name, day, local.isoformat(), isoformat(row.paid_out_at),
               row.drawer, row.staff_name, row.order_number, row.customer_name or "",
               row.refund_id, 1, Decimal(money(row.amount_cents))]
    for kind, totals in (("drawer_total", report.by_drawer), ("staff_total", report.by_staff)):
        for total in totals:
            yield [kind, store.name, day, "", "", total.label if kind == "drawer_total" else "",
                   total.label if kind == "staff_total" else "", "", "", "", total.count,
                   Decimal(money(total.total_cents))]
    yield ["day_total", store.name, day, "", "", "", "", "", "", "", report.count,
           Decimal(money(report.total_cents))]


# --- a balance due, paid at pickup -----------------------------------------------------------

def take_balance(order_id, actor, *, tender, amount_cents, drawer=None, context=None):
    """The customer pays (part of) what a reinstated order owes: a Payment taken at the
    counter, in `tender` (store credit: from their balance, as a ledger entry)."""
    try:
        order = require_visible(actor, lock_order(order_id))
        if not can(actor, "pay_out_cash"):
            raise Forbidden("You do not have permission to take payments at the counter.")
        if tender not in TENDERS:
            raise ValidationFailed(
                "Choose how the customer pays: cash, debit, card or store credit.",
                details={"fields": [{"field": "tender", "message": "is not a tender"}]})
        due = order.balance_due_cents or 0
        if due <= 0:
            raise InvalidState(f"Order {order.number} owes nothing.")
        if not isinstance(amount_cents, int) or isinstance(amount_cents, bool) \
                or not 1 <= amount_cents <= due:
            raise ValidationFailed(
                f"The amount must be between $0.01 and the balance due, ${money(due)}.",
                details={"fields": [{"field": "amount", "message": "is out of range"}]})
        drawer = clean_drawer(drawer, required=tender == CASH)
        before = {"balance_due": money(due), "paid": money(order.paid_cents)}
        order.paid_cents += amount_cents
        order.balance_due_cents = due - amount_cents
        if order.balance_due_cents == 0 and order.payment_status == PaymentStatus.BALANCE_DUE.value:
            order.payment_status = PaymentStatus.PAID.value  # settled: owes nothing again
        db.session.flush()  # the version-checked order update: a concurrent payment loses here
        if tender == Tender.STORE_CREDIT.value:
            _spend_store_credit(order, actor, amount_cents)
        payment = Payment(order_id=order.id, tender=tender, amount_cents=amount_cents,
                          taken_by_id=actor.id, drawer=drawer, created_at=utcnow())
        db.session.add(payment)
        db.session.flush()
        record(actor, "order.balance_paid", target_type="order", target_id=order.id,
               store_id=order.store_id, order_id=order.id, before=before,
               after={"balance_due": money(order.balance_due_cents),
                      "paid": money(order.paid_cents), "tender": tender,
                      "amount": money(amount_cents), "drawer": drawer,
                      "payment_id": payment.id},
               context=context)
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise ConcurrentModification(None, "This order was changed by someone else (another "
                                           "payment?) while you took this one; nothing was "
                                           "recorded. Refresh and check the balance.") from None
    except Exception:
        db.session.rollback()
        raise
    return payment


def _spend_store_credit(order, actor, amount_cents):
    """Take `amount_cents` off the customer's store credit: conditional, so the balance never
    goes below zero whatever runs at the same time."""
    if order.customer_id is None:
        raise ValidationFailed("A walk-in order has no store credit to pay with.",
                               details={"fields": [{"field": "tender",
                                                    "message": "no customer on file"}]})
    taken = db.session.execute(
        update(Customer).where(Customer.id == order.customer_id,
                               Customer.store_credit_cents >= amount_cents)
        .values(store_credit_cents=Customer.store_credit_cents - amount_cents)
        .execution_options(synchronize_session=False)).rowcount
    if not taken:
        balance = db.session.scalar(select(Customer.store_credit_cents).where(
            Customer.id == order.customer_id)) or 0
        raise ValidationFailed(
            f"The customer has only ${money(balance)} of store credit.",
            details={"fields": [{"field": "amount", "message": "exceeds the store credit"}]})
    db.session.add(StoreCreditEntry(
        customer_id=order.customer_id, order_id=order.id, amount_cents=-amount_cents,
        kind=StoreCreditKind.SPENT.value, note=f"Paid toward the balance of {order.number}",
        actor_id=actor.id, created_at=utcnow()))
    if order.customer is not None:
        db.session.expire(order.customer, ["store_credit_cents"])
