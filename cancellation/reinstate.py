"""Reinstating a cancelled order inside the rollback window (runbook "Rollback Procedure").

Reinstating undoes exactly what the cancellation did: the previous status, the stock reserved
again, the loyalty entries reversed, the pending refund and notification voided. It is refused —
with the reason — when the window has passed, the refund was already paid out, the stock is no
longer there or the order changed after the cancellation, and while maintenance mode is on
(503 `maintenance_mode`: nothing changes; ask again after it).
"""
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm.exc import StaleDataError

from cancellation import switch
from cancellation.audit import record
from cancellation.errors import Blocked, ConcurrentModification, Forbidden, InvalidState
from cancellation.locks import lock_order
from cancellation.outbox import RETRYABLE
from cancellation.policy import can, require_visible
from models import (
    Cancellation,
    Customer,
    LoyaltyEntry,
    LoyaltyKind,
    Notification,
    Refund,
    Setting,
    StockLevel,
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


@dataclass
class Eligibility:
    eligible: bool
    reasons: list = field(default_factory=list)  # [{"code", "message"}]
    deadline: object = None
    cancellation: object = None

    def to_dict(self):
        return {"eligible": self.eligible, "reasons": self.reasons,
                "deadline": isoformat(self.deadline),
                "cancellation_id": self.cancellation.id if self.cancellation else None}


def _last_full_cancellation(order):
    full = [c for c in order.cancellations if c.kind == "full"]
    return full[-1] if full else None


def reinstate_eligibility(order, now=None):
    now = now or utcnow()
    if order.status != OrderStatus.CANCELLED.value:
        return Eligibility(False, [{"code": "not_cancelled",
                                    "message": f"Order {order.number} is {order.status}, "
                                               "not cancelled."}])
    cancellation = _last_full_cancellation(order)
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
    if any(r.status == DeliveryStatus.SUCCEEDED.value for r in refunds):
        reasons.append({"code": "refund_paid_out", "message": (
            "The refund was already paid out to the customer and cannot be reversed here.")})
    elif any(r.status == DeliveryStatus.PROCESSING.value for r in refunds):
        reasons.append({"code": "refund_in_progress", "message": (
            "The refund is being paid out right now; check again in a minute.")})
    if cancellation.order_version is not None and order.version != cancellation.order_version:
        reasons.append({"code": "order_changed", "message": (
            "The order was changed after it was cancelled; reinstate it by hand.")})
    for line in cancellation.items:
        if not line.stock_returned:
            continue
        stock = db.session.scalar(select(StockLevel).where(
            StockLevel.store_id == order.store_id, StockLevel.product_id == line.product_id))
        if stock is None or stock.available < line.quantity:
            reasons.append({"code": "stock_unavailable", "message": (
                f"Only {stock.available if stock else 0} of {line.product.name} "
                f"({line.product.sku}) are available; {line.quantity} are needed.")})
    return Eligibility(not reasons, reasons, deadline, cancellation)


def reinstate_order(order_id, actor, *, reason, restore_previous_state=True, context=None):
    """Undo the last full cancellation of the order. Raises with the reason when not eligible."""
    try:
        order = require_visible(actor, lock_order(order_id))
        if not can(actor, "reinstate_order"):
            raise Forbidden("You do not have permission to reinstate orders.")
        # Refused here, not queued: a reinstatement is decided on the order as it is now (see
        # cancellation/maintenance.py); here, so that every caller refuses it the same way.
        switch.refuse_while_on(switch.REINSTATING_PAUSED)
        eligibility = reinstate_eligibility(order)
        if not eligibility.eligible:
            codes = {r["code"] for r in eligibility.reasons}
            message = " ".join(r["message"] for r in eligibility.reasons)
            details = {"reasons": eligibility.reasons}
            if codes & {"not_cancelled", "no_cancellation_record", "window_passed"}:
                raise InvalidState(message, details=details)
            raise Blocked(message, code="not_reinstatable", details=details)
        _undo(order, eligibility.cancellation, actor, reason, restore_previous_state, context)
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise ConcurrentModification(None) from None
    except Exception:
        db.session.rollback()
        raise
    return order


def _undo(order, cancellation, actor, reason, restore_previous_state, context):
    before = {"status": order.status, "version": order.version}
    # Void first: these UPDATEs autoflush, and the order must change in one flush (one version).
    voided_cents = 0
    for refund in db.session.scalars(select(Refund).where(
            Refund.cancellation_id == cancellation.id)).all():
        # Conditional on the status: a worker that claimed the refund a moment ago wins, and
        # the reinstatement is refused rather than voiding money already on its way.
        voided = db.session.execute(
            update(Refund).where(Refund.id == refund.id, Refund.status.in_(RETRYABLE))
            .values(status=DeliveryStatus.VOIDED.value, next_attempt_at=None)
            .execution_options(synchronize_session=False)).rowcount
        if not voided:
            raise Blocked("The refund was paid out, or is being paid out, while you asked; "
                          "the order cannot be reinstated.", code="not_reinstatable")
        voided_cents += refund.amount_cents
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
    order.refunded_cents -= voided_cents
    if voided_cents:
        order.payment_status = (PaymentStatus.PAID.value if order.refunded_cents == 0
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
    record(actor, "order.reinstated", target_type="order", target_id=order.id,
           store_id=order.store_id, order_id=order.id, before=before,
           after={"status": order.status, "reason": reason, "cancellation_id": cancellation.id,
                  "refund_voided": money(voided_cents),
                  "restore_previous_state": restore_previous_state},
           context=context)


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
