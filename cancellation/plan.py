"""What a cancellation writes, worked out before anything is written. Reads nothing, writes nothing.

`plan_cancel` takes an order read under its row lock (items loaded), the request, the lines to
cancel (none: every open quantity — a full cancel is the partial cancel of everything still
open), and the two facts it cannot see on the order (the points earlier cancellations settled,
which products have a stock row), and answers every figure `effects.write` puts in the database:
the lines and their stock, the money taken off the order and refunded, the payment status left,
the points, the order's columns after, the outbox rows and the audit before/after. One
arithmetic for every path, so an order cancelled piece by piece ends exactly as one cancelled
whole, and a bulk batch exactly as the same orders cancelled one at a time.

The arithmetic (`split`) is a pure function of integers:

* Points are cumulative: after items worth C of the S placed (at unit prices) are cancelled,
  `points * C // S` of the redeemed points are restored and of the earned points reversed, in
  total. Each cancellation settles the difference between that and what was already settled, so
  the points depend only on what has been cancelled, never on the order it was cancelled in.
* Money is split off what is still open: a cancellation of items worth `value` of the `open`
  value removes `amount * value // open` of the order's current subtotal, tax and discount
  (exactly `value` of a subtotal that matches its lines), and the total changes by the sum.
  The refund is the same share of what is still refundable (`refundable * removed // total`): on
  a fully paid order exactly what the total went down by, so paid - refunded is always the
  order's total. Integer floors only, no floats.
* The cancellation that leaves nothing open takes everything that is left — the whole paid
  remainder, the value still open and every point not yet settled — and puts the order's totals
  back to what it was placed for (what is left plus what earlier cancellations took; each
  cancellation records the value it took). So an order cancelled piece by piece, in any order,
  ends with exactly the refund, totals, points and stock of one full cancel, and a cancelled
  order shows what it was worth.

(The order row keeps only its current tax and discount, not the placed ones, so those two cannot
be recomputed from the placed figures: a different order of partial cancels can round a cent
differently on the way, never at the end.)
"""
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple

from models import money
from models.order import OrderStatus, PaymentStatus

CANCELLED = OrderStatus.CANCELLED.value
FULL, PARTIAL = "full", "partial"


# --- the arithmetic --------------------------------------------------------------------------

class Settled(NamedTuple):
    """What an order's earlier cancellations (not reinstated) settled, summed: the points
    restored and reversed, and the value taken off its totals. Field names are the columns of
    Cancellation they sum."""

    points_restored: int = 0
    points_reversed: int = 0
    subtotal_cents: int = 0
    tax_cents: int = 0
    discount_cents: int = 0
    total_cents: int = 0


NOTHING_SETTLED = Settled()


@dataclass(frozen=True)
class Figures:
    """An order's money (cents) and points right before a cancellation, as plain integers."""

    subtotal: int
    tax: int
    discount: int
    total: int
    paid: int
    refunded: int
    placed_value: int  # sum of quantity x unit price over every line as placed
    open_value: int  # sum of open quantity x unit price, before this cancellation
    points_earned: int = 0
    points_redeemed: int = 0
    points_reversed: int = 0  # already settled by earlier cancellations
    points_restored: int = 0
    balance_due: int = 0  # owed again since a reinstatement (cancellation/reinstate.py)

    @property
    def refundable(self):
        return max(self.paid - self.refunded, 0)


@dataclass(frozen=True)
class Split:
    """What one cancellation takes off the order (all non-negative)."""

    subtotal: int
    tax: int
    discount: int
    total: int
    refund: int
    points_restored: int
    points_reversed: int
    balance_cleared: int = 0  # taken off the balance due: what the customer no longer owes


def _share(amount, part, whole):
    """`part / whole` of `amount`, rounded down; nothing of nothing."""
    if whole <= 0 or amount <= 0 or part <= 0:
        return 0
    return amount * min(part, whole) // whole


def _points(total, settled, cancelled_value, placed_value, closes):
    """This cancellation's points: the cumulative share of `total`, less what is settled."""
    left = max(total - settled, 0)
    if closes:
        return left
    return min(max(_share(total, cancelled_value, placed_value) - settled, 0), left)


def split(figures, value, *, closes):
    """What cancelling items worth `value` (at unit prices) takes off an order with `figures`.

    `closes`: nothing of the order is left open afterwards — then everything left goes.
    """
    f = figures
    due = max(f.balance_due, 0)
    if closes:
        subtotal, tax, discount = max(f.subtotal, 0), max(f.tax, 0), max(f.discount, 0)
        total, refund, cleared = max(f.total, 0), f.refundable, due
    else:
        subtotal = _share(f.subtotal, value, f.open_value)
        tax = _share(f.tax, value, f.open_value)
        discount = _share(f.discount, value, f.open_value)
        total = min(max(subtotal + tax - discount, 0), max(f.total, 0))
        if due:  # what is cancelled is first what the customer still owes, then refunded
            cleared = min(total, due)
            refund = min(total - cleared, f.refundable)
        else:
            cleared, refund = 0, _share(f.refundable, total, f.total)
    cancelled_value = f.placed_value - f.open_value + value
    return Split(
        subtotal=subtotal, tax=tax, discount=discount, total=total, refund=refund,
        balance_cleared=cleared,
        points_restored=_points(f.points_redeemed, f.points_restored, cancelled_value,
                                f.placed_value, closes),
        points_reversed=_points(f.points_earned, f.points_reversed, cancelled_value,
                                f.placed_value, closes))


def figures_of(order, settled=NOTHING_SETTLED):
    """The order's Figures; `settled`: what its earlier cancellations settled (Settled)."""
    with_customer = order.customer_id is not None
    restored, reversed_ = ((settled.points_restored, settled.points_reversed) if with_customer
                           else (0, 0))
    return Figures(
        subtotal=order.subtotal_cents, tax=order.tax_cents, discount=order.discount_cents,
        total=order.total_cents, paid=order.paid_cents, refunded=order.refunded_cents,
        placed_value=sum(i.quantity * i.unit_price_cents for i in order.items),
        open_value=sum(i.open_quantity * i.unit_price_cents for i in order.items),
        points_earned=order.points_earned if with_customer else 0,
        points_redeemed=order.points_redeemed if with_customer else 0,
        points_reversed=reversed_, points_restored=restored,
        balance_due=order.balance_due_cents or 0)


def open_lines(order):
    """[(item, quantity)]: every open quantity of the order — what a full cancel cancels."""
    return [(item, item.open_quantity) for item in order.items if item.open_quantity > 0]


def closes_order(order, lines):
    """Nothing of the order is left open once `lines` ([(item, quantity)]) are cancelled."""
    asked = {item.id: quantity for item, quantity in lines}
    return all(item.open_quantity - asked.get(item.id, 0) <= 0 for item in order.items)


def amounts_of(order, lines, settled=NOTHING_SETTLED):
    """(Split, closes) for cancelling `lines` ([(item, quantity)]) of `order`."""
    closes = closes_order(order, lines)
    value = sum(item.unit_price_cents * quantity for item, quantity in lines)
    return split(figures_of(order, settled), value, closes=closes), closes


def payment_status_after(order, refund, balance_due=0):
    """The payment status once `refund` more cents are booked as refunded and `balance_due`
    is still owed."""
    if balance_due > 0:
        return PaymentStatus.BALANCE_DUE.value
    if refund <= 0 and order.payment_status != PaymentStatus.BALANCE_DUE.value:
        return order.payment_status
    refunded = order.refunded_cents + max(refund, 0)
    if refunded <= 0:
        return PaymentStatus.PAID.value if order.paid_cents else PaymentStatus.UNPAID.value
    return (PaymentStatus.REFUNDED.value if refunded >= order.paid_cents
            else PaymentStatus.PARTIALLY_REFUNDED.value)


# --- the refund, per tender ----------------------------------------------------------------------

STORE_CREDIT = "store_credit"
ORIGINAL = "original"


class Allocation(NamedTuple):
    """One refund of a cancellation: `amount` cents of payment `payment_id` (paid in `paid_in`),
    going back in `tender` — the payment's own tender, or store credit when the customer chose
    it. `payment_id` is None for an order paid before payments were recorded."""

    payment_id: int | None
    paid_in: str
    tender: str
    amount: int


def allocate(payments, amount):
    """Split a refund of `amount` cents over `payments` [(id, tender, refundable cents)]:
    {payment id: cents}, never more than a payment has left to refund.

    The documented order: store credit first (an internal ledger, given back at once), then the
    other tenders — cash, debit, card — in proportion to what each has left, floored, the cents
    left over going one each to the largest remainders (ties: the earlier payment). A refund of
    everything refundable therefore gives every payment back exactly what it has left, so partial
    cancellations followed by the last one refund each tender exactly what one full cancel
    would."""
    out = {payment_id: 0 for payment_id, _tender, _left in payments}
    left = max(amount, 0)
    for payment_id, tender, refundable in sorted(payments, key=lambda p: p[0]):
        if tender == STORE_CREDIT and left > 0:
            take = min(left, max(refundable, 0))
            out[payment_id] += take
            left -= take
    others = [(payment_id, refundable) for payment_id, tender, refundable
              in sorted(payments, key=lambda p: p[0]) if tender != STORE_CREDIT and refundable > 0]
    whole = sum(refundable for _, refundable in others)
    left = min(left, whole)
    if left > 0:
        shares = {payment_id: refundable * left // whole for payment_id, refundable in others}
        rest = left - sum(shares.values())
        by_remainder = sorted(others, key=lambda p: (-(p[1] * left % whole), p[0]))
        for payment_id, _refundable in by_remainder[:rest]:
            shares[payment_id] += 1
        for payment_id, share in shares.items():
            out[payment_id] += share
    return out


def refunds_of(order, amount, refund_to=ORIGINAL):
    """(Allocation, ...) of a refund of `amount` cents off `order` (its payments loaded)."""
    if amount <= 0:
        return ()
    payments = list(order.payments)
    if not payments:  # paid before payments were recorded: one refund in its method
        paid_in = order.payment_method or "card"
        shares = [(None, paid_in, amount)]
    else:
        split_ = allocate([(p.id, p.tender, p.refundable_cents) for p in payments], amount)
        shares = [(p.id, p.tender, split_[p.id]) for p in payments if split_[p.id] > 0]
    to_credit = refund_to == STORE_CREDIT and order.customer_id is not None
    allocations = []
    for payment_id, paid_in, cents in shares:
        tender = STORE_CREDIT if to_credit else paid_in
        if tender == STORE_CREDIT and order.customer_id is None:
            tender = "cash"  # nobody to credit: it is handed back at the counter
        allocations.append(Allocation(payment_id, paid_in, tender, cents))
    return tuple(allocations)


# --- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One cancelled line: which item, how many, and whether a stock row takes the units back."""

    item_id: int
    product_id: int
    quantity: int
    stock_returned: bool


@dataclass
class Plan:
    """One order's cancellation, every figure decided; `effects.write` writes it as it is.

    The ids of the rows it inserts are filled in by the writer."""

    order: object  # the Order, read under its row lock
    kind: str  # full / partial
    request: object  # CancelRequest: reason, notes, customer-request details, notify_customer
    lines: tuple  # of Line, in product order (the order stock rows are locked in)
    closes: bool
    amounts: Split
    now: datetime
    before: dict  # the order's audit snapshot before
    values: dict  # the order's columns after (its version moves by one)
    open_after: dict  # {item id: open quantity} once the lines are cancelled
    refunds: tuple = ()  # of Allocation: the refund, per payment and tender
    cancellation_id: int | None = None
    refund_ids: list = field(default_factory=list)  # the refund rows, in `refunds` order
    notification_id: int | None = None
    extra: dict = field(default_factory=dict)  # the caller's own audit fields (none today)

    @property
    def order_id(self):
        return self.order.id

    @property
    def store_id(self):
        return self.order.store_id

    @property
    def customer_id(self):
        return self.order.customer_id

    @property
    def refund_cents(self):
        return self.amounts.refund

    @property
    def inventory_reconciliation(self):
        return not all(line.stock_returned for line in self.lines)

    @property
    def action(self):
        return "order.cancelled" if self.kind == FULL else "order.partially_cancelled"

    @property
    def template(self):
        return f"order_{self.kind}_cancelled"

    @property
    def recipient(self):
        customer = self.order.customer
        return customer.email if customer is not None else None

    @property
    def notifies(self):
        return bool(self.request.notify_customer)

    @property
    def version(self):
        """The order's version the plan was made on (what the writer compares and sets)."""
        return self.before["version"]

    @property
    def previous_status(self):
        return self.before["status"]

    def loyalty_entries(self):
        """[(points, kind, note)]: what the customer gets back and loses."""
        if self.customer_id is None:
            return []
        what = "items cancelled" if self.kind == PARTIAL else "order cancelled"
        number = self.order.number
        entries = []
        if self.amounts.points_restored:
            entries.append((self.amounts.points_restored, "restored",
                            f"Redeemed on {number}, {what}"))
        if self.amounts.points_reversed:
            entries.append((-self.amounts.points_reversed, "reversed",
                            f"Earned on {number}, {what}"))
        return entries

    def points_delta(self):
        if self.customer_id is None:
            return 0
        return self.amounts.points_restored - self.amounts.points_reversed

    def after(self):
        """The audit event's `after`, once the writer has filled in the ids."""
        values = self.values
        return {
            "status": values.get("status", self.previous_status), "version": values["version"],
            "total": money(values["total_cents"]), "payment_status": values["payment_status"],
            "open_items": {str(item_id): quantity
                           for item_id, quantity in self.open_after.items()},
            "subtotal": money(values["subtotal_cents"]), "tax": money(values["tax_cents"]),
            "discount": money(values["discount_cents"]),
            "refunded": money(values["refunded_cents"]),
            "cancellation_id": self.cancellation_id,
            "items": [{"item_id": line.item_id, "quantity": line.quantity}
                      for line in self.lines],
            "order_cancelled": self.closes, "reason": self.request.reason,
            "notes": self.request.notes,
            "refund": money(self.refund_cents) if self.refund_cents > 0 else None,
            "refunds": [{"tender": a.tender, "paid_in": a.paid_in, "amount": money(a.amount)}
                        for a in self.refunds],
            "points_restored": self.amounts.points_restored,
            "points_reversed": self.amounts.points_reversed,
            "notification_id": self.notification_id,
            "inventory_reconciliation": self.inventory_reconciliation,
            **self.extra,
        }


def snapshot(order):
    """The order as an audit event's `before` (and, via Plan.after, `after`) records it."""
    return {"status": order.status, "version": order.version,
            "total": money(order.total_cents), "payment_status": order.payment_status,
            "open_items": {str(i.id): i.open_quantity for i in order.items},
            "subtotal": money(order.subtotal_cents), "tax": money(order.tax_cents),
            "discount": money(order.discount_cents), "refunded": money(order.refunded_cents)}


def plan_cancel(order, request, now, *, lines=None, settled=NOTHING_SETTLED,
                stocked=frozenset()):
    """The Plan for cancelling `lines` ([(item, quantity)], checked against the order already)
    of `order`, or — `lines` None — every open quantity (a full cancel).

    `settled`: what the order's earlier cancellations settled (Settled);
    `stocked`: the product ids with a stock row in the order's store.
    """
    kind = FULL if lines is None else PARTIAL
    if lines is None:
        lines = open_lines(order)
    amounts, closes = amounts_of(order, lines, settled)
    planned = tuple(Line(item.id, item.product_id, quantity, item.product_id in stocked)
                    for item, quantity in sorted(lines, key=lambda line: (line[0].product_id,
                                                                          line[0].id)))
    cancelled = {line.item_id: line.quantity for line in planned}
    refunds = refunds_of(order, amounts.refund,
                         getattr(request, "refund_to", ORIGINAL) or ORIGINAL)
    # The refund rows are the refund: never book more refunded than the payments give back
    # (an order whose paid_cents disagreed with its payments would otherwise).
    given = sum(allocation.amount for allocation in refunds)
    if given != amounts.refund:
        amounts = replace(amounts, refund=given)
    return Plan(order=order, kind=kind, request=request, lines=planned, closes=closes,
                amounts=amounts, now=now, before=snapshot(order), refunds=refunds,
                values=order_values(order, amounts, closes, now, settled),
                open_after={item.id: item.open_quantity - cancelled.get(item.id, 0)
                            for item in order.items})


def order_values(order, amounts, closes, now, settled=NOTHING_SETTLED):
    """The order's columns after the cancellation (its version moves by one): `amounts` taken
    off its totals — or, when nothing is left open, the totals it was placed for (what is left
    plus what earlier cancellations took), as a cancelled order shows them."""
    if closes:
        totals = (order.subtotal_cents + settled.subtotal_cents,
                  order.tax_cents + settled.tax_cents,
                  order.discount_cents + settled.discount_cents,
                  order.total_cents + settled.total_cents)
    else:
        totals = (order.subtotal_cents - amounts.subtotal, order.tax_cents - amounts.tax,
                  order.discount_cents - amounts.discount, order.total_cents - amounts.total)
    values = {
        "subtotal_cents": totals[0], "tax_cents": totals[1], "discount_cents": totals[2],
        "total_cents": totals[3],
        "refunded_cents": order.refunded_cents + max(amounts.refund, 0),
        "balance_due_cents": (order.balance_due_cents or 0) - amounts.balance_cleared,
        "payment_status": payment_status_after(
            order, amounts.refund, (order.balance_due_cents or 0) - amounts.balance_cleared),
        "updated_at": now, "version": order.version + 1,
    }
    if closes:
        values.update(status=CANCELLED, previous_status=order.status, cancelled_at=now)
    return values
