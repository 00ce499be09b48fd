"""Reinstating a cancelled order inside the rollback window (runbook "Rollback Procedure").

Reinstating undoes the cancellation that closed the order — a full cancel, or the partial one
that cancelled its last items: the previous status, the stock reserved again, the loyalty
entries reversed, the customer's notice voided if it had not gone out, and the money:

* a refund not yet gone out (waiting for the processor, failed, or cash waiting at the counter)
  is voided — nothing was paid;
* a refund paid out (by the processor, or in cash at the counter) stays paid: the order comes
  back with a **balance due** of that amount, paid again at pickup (cancellation/payouts.py);
* a refund given as store credit is taken back from the customer's credit as far as it goes;
  what they already spent of it is due;
* `use_store_credit`: the customer agreed to settle the balance from their store credit.

The customer is told (a notice of its own). It is refused — with the reason — when the window has
passed, a refund is being paid out at this moment, the stock is no longer there or the order
changed after the cancellation, and while maintenance mode is on (503 `maintenance_mode`:
nothing changes; ask again after it).
"""
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm.exc import StaleDataError

from cancellation import outbox, switch
from cancellation.audit import record
from cancellation.errors import Blocked, ConcurrentModification, Forbidden, InvalidState
from cancellation.locks import lock_order
from cancellation.outbox import RETRYABLE
from cancellation.plan import STORE_CREDIT
from cancellation.policy import can, require_visible
from cancellation.transactions import after_commit
from models import (
    Cancellation,
    Customer,
    LoyaltyEntry,
    LoyaltyKind,
    Notification,
    Payment,
    Refund,
    Setting,
    StockLevel,
    StoreCreditEntry,
    StoreCreditKind,
    db,
    isoformat,
    money,
    utcnow,
)
from models.delivery import DeliveryStatus
from models.order import OrderStatus, PaymentStatus

TOTALS = ("subtotal_cents", "tax_cents", "discount_cents", "total_cents")
REMEDIATION = ("Reinstatement now requires manual intervention: open a remediation ticket with "
               "template CASE-REINSTATE and include the original order data from "
               "GET /api/v2/orders/{id}/audit-log.")


VOID, DUE, CREDIT = "void", "balance_due", "store_credit"
VOIDABLE = (*RETRYABLE, DeliveryStatus.AWAITING_PAYOUT.value)


@dataclass(frozen=True)
class MoneyEffect:
    """What reinstating does about one refund of the cancellation."""

    refund: object
    effect: str  # VOID, DUE (paid out: owed again), CREDIT (taken back from store credit)
    taken_back: int = 0  # store credit taken back
    due: int = 0  # added to the balance due

    def to_dict(self):
        refund = self.refund
        amount = f"${money(refund.amount_cents)}"
        tender = (refund.method or "card").replace("_", " ")
        if self.effect == VOID:
            message = f"The {tender} refund of {amount} has not gone out: it is cancelled."
        elif self.effect == CREDIT and not self.due:
            message = f"The {amount} given as store credit is taken back from the customer."
        elif self.effect == CREDIT:
            message = (f"${money(self.taken_back)} of the {amount} store credit is taken back; "
                       f"the customer spent the rest, ${money(self.due)} is due.")
        else:
            message = (f"The {tender} refund of {amount} was paid out: the customer owes it "
                       "again (balance due).")
        return {"refund_id": refund.id, "tender": refund.method,
                "amount": money(refund.amount_cents),
                "status": refund.status, "effect": self.effect, "message": message,
                "due": money(self.due), "store_credit_taken_back": money(self.taken_back)}


@dataclass
class Eligibility:
    eligible: bool
    reasons: list = field(default_factory=list)  # [{"code", "message"}]
    deadline: object = None
    cancellation: object = None
    money: list = field(default_factory=list)  # [MoneyEffect]
    settled_from_credit: int = 0  # of the balance, paid from store credit (use_store_credit)
    status_after: str | None = None
    stock: list = field(default_factory=list)  # [{"sku", "name", "quantity"}]

    @property
    def owed_again(self):
        """Cents the order owes once reinstated, before any store credit settles them: the
        refunds paid out, and what the cancellation took off an earlier balance due."""
        cleared = self.cancellation.balance_cleared_cents if self.cancellation else 0
        return sum(effect.due for effect in self.money) + (cleared or 0)

    @property
    def balance_due(self):
        return self.owed_again - self.settled_from_credit

    def to_dict(self):
        cancellation = self.cancellation
        effects = None
        if cancellation is not None:
            effects = {
                "status": self.status_after, "stock": self.stock,
                "points": {"taken_back": cancellation.points_restored,
                           "given_back": cancellation.points_reversed},
                "money": [effect.to_dict() for effect in self.money],
                "paid_from_store_credit": money(self.settled_from_credit),
                "balance_due": money(self.balance_due)}
        return {"eligible": self.eligible, "reasons": self.reasons,
                "deadline": isoformat(self.deadline),
                "cancellation_id": cancellation.id if cancellation else None,
                "effects": effects}


def _closing_cancellation(order):
    """The cancellation that left nothing open (the last not reinstated): what is undone."""
    standing = [c for c in order.cancellations if c.reinstated_at is None]
    return standing[-1] if standing else None


def money_effects(order, refunds, use_store_credit=False, owed=0):
    """([MoneyEffect], cents of the balance paid from store credit) for the cancellation's
    `refunds`, given the customer's store credit now; `owed`: what else comes due again (a
    balance the cancellation had cleared)."""
    credit = order.customer.store_credit_cents if order.customer is not None else 0
    effects = []
    for refund in refunds:
        if refund.status in VOIDABLE:
            effects.append(MoneyEffect(refund, VOID))
        elif refund.status != DeliveryStatus.SUCCEEDED.value:
            continue  # voided before; processing is refused by the caller
        elif refund.method == STORE_CREDIT:
            taken = min(refund.amount_cents, max(credit, 0))
            credit -= taken
            effects.append(MoneyEffect(refund, CREDIT, taken_back=taken,
                                       due=refund.amount_cents - taken))
        else:
            effects.append(MoneyEffect(refund, DUE, due=refund.amount_cents))
    due = sum(effect.due for effect in effects) + owed
    settled = min(due, max(credit, 0)) if use_store_credit else 0
    return effects, settled


def reinstate_eligibility(order, now=None, use_store_credit=False):
    now = now or utcnow()
    if order.status != OrderStatus.CANCELLED.value:
        return Eligibility(False, [{"code": "not_cancelled",
                                    "message": f"Order {order.number} is {order.status}, "
                                               "not cancelled."}])
    cancellation = _closing_cancellation(order)
    if cancellation is None:
        return Eligibility(False, [{"code": "no_cancellation_record",
                                    "message": "There is no cancellation record to undo."}])
    window = timedelta(hours=Setting.get("reinstate_window_hours"))
    deadline = cancellation.created_at + window
    reasons = []
    if now > deadline:
        reasons.append({"code": "window_passed", "message": (
            f"The {window.total_seconds() / 3600:g}-hour reinstatement window closed at "
            f"{isoformat(deadline)}. " + REMEDIATION.format(id=order.id))})
    refunds = [r for r in order.refunds if r.cancellation_id == cancellation.id]
    if any(r.outcome_unknown and r.status in VOIDABLE for r in refunds):
        reasons.append({"code": "refund_outcome_unknown", "message": (
            "A refund was sent to the payment processor and its answer was lost: it may have "
            "been paid. It is looked up on its next attempt (or retry it now); ask again once "
            "it shows paid or failed.")})
    elif any(r.status == DeliveryStatus.PROCESSING.value for r in refunds):
        reasons.append({"code": "refund_in_progress", "message": (
            "The refund is being paid out right now; check again in a minute.")})
    if cancellation.order_version is not None and order.version != cancellation.order_version:
        reasons.append({"code": "order_changed", "message": (
            "The order was changed after it was cancelled; reinstate it by hand.")})
    stock_back = []
    for line in cancellation.items:
        stock_back.append({"sku": line.product.sku, "name": line.product.name,
                           "quantity": line.quantity, "reserved_again": line.stock_returned})
        if not line.stock_returned:
            continue
        stock = db.session.scalar(select(StockLevel).where(
            StockLevel.store_id == order.store_id, StockLevel.product_id == line.product_id))
        if stock is None or stock.available < line.quantity:
            reasons.append({"code": "stock_unavailable", "message": (
                f"Only {stock.available if stock else 0} of {line.product.name} "
                f"({line.product.sku}) are available; {line.quantity} are needed.")})
    effects, settled = money_effects(order, refunds, use_store_credit,
                                     owed=cancellation.balance_cleared_cents or 0)
    return Eligibility(not reasons, reasons, deadline, cancellation, money=effects,
                       settled_from_credit=settled, status_after=cancellation.previous_status,
                       stock=stock_back)


def reinstate_order(order_id, actor, *, reason, restore_previous_state=True, context=None,
                    use_store_credit=False):
    """Undo the cancellation that closed the order. Raises with the reason when not eligible.
    `use_store_credit`: the customer agreed to pay the balance due from their store credit."""
    try:
        order = require_visible(actor, lock_order(order_id))
        if not can(actor, "reinstate_order"):
            raise Forbidden("You do not have permission to reinstate orders.")
        # Refused here, not queued: a reinstatement is decided on the order as it is now (see
        # cancellation/maintenance.py); here, so that every caller refuses it the same way.
        switch.refuse_while_on(switch.REINSTATING_PAUSED)
        eligibility = reinstate_eligibility(order, use_store_credit=use_store_credit)
        if not eligibility.eligible:
            codes = {r["code"] for r in eligibility.reasons}
            message = " ".join(r["message"] for r in eligibility.reasons)
            details = {"reasons": eligibility.reasons}
            if codes & {"not_cancelled", "no_cancellation_record", "window_passed"}:
                raise InvalidState(message, details=details)
            raise Blocked(message, code="not_reinstatable", details=details)
        _undo(order, eligibility, actor, reason, restore_previous_state, context)
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise ConcurrentModification(None) from None
    except Exception:
        db.session.rollback()
        raise
    return order


def _undo(order, eligibility, actor, reason, restore_previous_state, context):
    cancellation = eligibility.cancellation
    before = {"status": order.status, "version": order.version,
              "balance_due": money(order.balance_due_cents)}
    # Void first: these UPDATEs autoflush, and the order must change in one flush (one version).
    voided_cents = 0
    for effect in eligibility.money:
        if effect.effect != VOID:
            continue
        refund = effect.refund
        # Conditional on the status: a worker that claimed the refund a moment ago (or staff
        # paying the cash out right now) wins, and the reinstatement is refused rather than
        # voiding money already on its way.
        voided = db.session.execute(
            update(Refund).where(Refund.id == refund.id, Refund.status.in_(VOIDABLE),
                                 Refund.outcome_unknown.is_(False))
            .values(status=DeliveryStatus.VOIDED.value, next_attempt_at=None)
            .execution_options(synchronize_session=False)).rowcount
        if not voided:
            raise Blocked("The refund was paid out, or is being paid out, while you asked; "
                          "ask again to see what reinstating does now.",
                          code="not_reinstatable")
        voided_cents += refund.amount_cents
        _no_longer_refunded(refund, refund.amount_cents)  # nothing went back after all
    taken_back = 0
    for effect in eligibility.money:
        if effect.effect == CREDIT and effect.taken_back:
            # The credit came back from the customer: that much of the payment is theirs no
            # more, i.e. no longer refunded (what they spent stays refunded, and is due).
            taken_back += effect.taken_back
            _no_longer_refunded(effect.refund, effect.taken_back)
    settled = eligibility.settled_from_credit
    _move_store_credit(order, cancellation, actor, taken_back, settled)
    due = eligibility.balance_due
    order.status = (cancellation.previous_status if restore_previous_state
                    else OrderStatus.PENDING.value)
    order.cancelled_at = None
    # A cancelled order shows the totals it was placed for; open again, it owes them less what
    # its other cancellations (earlier partial ones) took off.
    taken = db.session.execute(
        select(*(func.coalesce(func.sum(getattr(Cancellation, column)), 0)
                 for column in TOTALS))
        .where(Cancellation.order_id == order.id, Cancellation.id != cancellation.id,
               Cancellation.reinstated_at.is_(None))).one()
    for column, cents in zip(TOTALS, taken, strict=True):
        setattr(order, column, getattr(order, column) - int(cents))
    order.refunded_cents -= voided_cents + taken_back
    if settled:  # paid again from store credit, as a payment of its own
        order.payments.append(Payment(tender=STORE_CREDIT, amount_cents=settled,
                                      taken_by_id=getattr(actor, "id", None)))
        order.paid_cents += settled
    order.balance_due_cents += due
    if due > 0:
        order.payment_status = PaymentStatus.BALANCE_DUE.value
    elif voided_cents or settled or taken_back:
        order.payment_status = (PaymentStatus.PAID.value
                                if order.paid_cents - order.refunded_cents >= order.total_cents
                                else PaymentStatus.PARTIALLY_REFUNDED.value)
    db.session.flush()  # the version-checked order update: a concurrent change loses here
    by_item = {item.id: item for item in order.items}
    for line in sorted(cancellation.items, key=lambda line: line.product_id):
        by_item[line.order_item_id].cancelled_quantity -= line.quantity
        if line.stock_returned:
            taken = db.session.execute(
                update(StockLevel)
                .where(StockLevel.store_id == order.store_id,
                       StockLevel.product_id == line.product_id,
                       StockLevel.on_hand - StockLevel.reserved >= line.quantity)
                .values(reserved=StockLevel.reserved + line.quantity)
                .execution_options(synchronize_session=False)).rowcount
            if not taken:
                raise Blocked(f"{line.product.name} is no longer available in the quantity the "
                              "order needs.", code="not_reinstatable")
    _reverse_loyalty(order, cancellation)
    db.session.execute(
        update(Notification).where(Notification.cancellation_id == cancellation.id,
                                   Notification.status.in_(RETRYABLE))
        .values(status=DeliveryStatus.VOIDED.value, next_attempt_at=None)
        .execution_options(synchronize_session=False))
    cancellation.reinstated_at = utcnow()
    cancellation.flag_manual_refund = cancellation.flag_manual_notification = False
    cancellation.flag_inventory_reconciliation = False
    notice = _tell_customer(order, cancellation)
    record(actor, "order.reinstated", target_type="order", target_id=order.id,
           store_id=order.store_id, order_id=order.id, before=before,
           after={"status": order.status, "reason": reason, "cancellation_id": cancellation.id,
                  "refund_voided": money(voided_cents),
                  "store_credit_taken_back": money(taken_back),
                  "paid_from_store_credit": money(settled),
                  "balance_due": money(order.balance_due_cents),
                  "money": [effect.to_dict() for effect in eligibility.money],
                  "notification_id": notice.id if notice is not None else None,
                  "restore_previous_state": restore_previous_state},
           context=context)
    if notice is not None:
        after_commit(outbox.send_rows, (), [notice.id])


def _no_longer_refunded(refund, cents):
    """`cents` of the refund's payment count as refunded no more (voided, or taken back)."""
    if refund.payment_id is not None:
        db.session.execute(
            update(Payment).where(Payment.id == refund.payment_id)
            .values(refunded_cents=Payment.refunded_cents - cents)
            .execution_options(synchronize_session=False))


def _tell_customer(order, cancellation):
    """The customer's notice that the order is back (with any balance due), in the outbox."""
    customer = order.customer
    if customer is None or not cancellation.notify_customer:
        return None
    notice = Notification(order_id=order.id, cancellation_id=cancellation.id, channel="email",
                          template="order_reinstated", recipient=customer.email,
                          idempotency_key=f"notify-reinstated-{cancellation.id}")
    db.session.add(notice)
    db.session.flush()
    return notice


def _move_store_credit(order, cancellation, actor, taken_back, settled):
    """The store credit the cancellation gave, taken back; and what pays the balance."""
    if order.customer_id is None or not (taken_back or settled):
        return
    entries = [(-taken_back, StoreCreditKind.REINSTATEMENT.value,
                f"Order {order.number} reinstated: refund taken back"),
               (-settled, StoreCreditKind.SPENT.value,
                f"Balance due of {order.number} paid")]
    for cents, kind, note in entries:
        if cents:
            db.session.add(StoreCreditEntry(customer_id=order.customer_id, order_id=order.id,
                                            cancellation_id=cancellation.id, amount_cents=cents,
                                            kind=kind, note=note,
                                            actor_id=getattr(actor, "id", None)))
    moved = taken_back + settled
    # Compare-and-set on the balance: credit spent meanwhile makes this fail, not go negative.
    if not db.session.execute(
            update(Customer).where(Customer.id == order.customer_id,
                                   Customer.store_credit_cents >= moved)
            .values(store_credit_cents=Customer.store_credit_cents - moved)
            .execution_options(synchronize_session=False)).rowcount:
        raise ConcurrentModification(None)


def _reverse_loyalty(order, cancellation):
    """Take back the points the cancellation restored; give back the points it reversed."""
    restored, reversed_ = cancellation.points_restored, cancellation.points_reversed
    if order.customer_id is None or not (restored or reversed_):
        return
    if restored:
        db.session.add(LoyaltyEntry(customer_id=order.customer_id, order_id=order.id,
                                    cancellation_id=cancellation.id, points=-restored,
                                    kind=LoyaltyKind.REDEEMED.value,
                                    note=f"Order {order.number} reinstated"))
    if reversed_:
        db.session.add(LoyaltyEntry(customer_id=order.customer_id, order_id=order.id,
                                    cancellation_id=cancellation.id, points=reversed_,
                                    kind=LoyaltyKind.EARNED.value,
                                    note=f"Order {order.number} reinstated"))
    db.session.execute(
        update(Customer).where(Customer.id == order.customer_id)
        .values(loyalty_points=Customer.loyalty_points - restored + reversed_)
        .execution_options(synchronize_session=False))
