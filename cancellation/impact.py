"""What a full cancellation of an order would do, computed without changing anything.

`plan_full_cancel` is used by the cancellation itself and by the preview, so the preview can never
promise something the cancel does not do.
"""
from dataclasses import dataclass, field

from sqlalchemy import func, select

from models import Cancellation, StockLevel, db, money


@dataclass
class StockLine:
    order_item_id: int
    product_id: int
    sku: str
    name: str
    quantity: int
    stock_row: bool  # False: nothing to return it to -> inventory reconciliation flag

    def to_dict(self):
        return {"order_item_id": self.order_item_id, "product_id": self.product_id,
                "sku": self.sku, "name": self.name, "quantity": self.quantity,
                "returns_to_stock": self.stock_row}


@dataclass
class Impact:
    lines: list = field(default_factory=list)
    refund_cents: int = 0
    refund_method: str | None = None
    points_restored: int = 0
    points_reversed: int = 0
    notification_recipient: str | None = None

    @property
    def inventory_reconciliation(self):
        return any(not line.stock_row for line in self.lines)

    def to_dict(self, *, notify, recipient_view):
        return {
            "stock_to_return": [line.to_dict() for line in self.lines],
            "units_to_return": sum(line.quantity for line in self.lines),
            "inventory_reconciliation": self.inventory_reconciliation,
            "refund": {"amount": money(self.refund_cents), "method": self.refund_method,
                       "will_refund": self.refund_cents > 0},
            "loyalty": {"points_to_restore": self.points_restored,
                        "points_to_reverse": self.points_reversed},
            "notifications": ([{"channel": "email", "template": "order_full_cancelled",
                                "recipient": recipient_view(self.notification_recipient)}]
                              if notify else []),
        }


def stock_lines(order, lines, check_stock=True):
    """What goes back to which stock row, for [(order item, quantity)]. Reads only.
    Without `check_stock`, whether each product has a stock row is left unknown (None)."""
    if not check_stock:
        return [StockLine(item.id, item.product_id, item.product.sku, item.product.name,
                          quantity, None) for item, quantity in lines]
    stocked = set(db.session.scalars(select(StockLevel.product_id).where(
        StockLevel.store_id == order.store_id,
        StockLevel.product_id.in_([item.product_id for item, _ in lines] or [-1]))))
    return [StockLine(item.id, item.product_id, item.product.sku, item.product.name, quantity,
                      item.product_id in stocked)
            for item, quantity in lines]


def points_settled(order):
    """(restored, reversed): the order's points earlier cancellations already settled — a
    partial cancellation settles its share, so what is left to settle is the rest."""
    if order.customer_id is None or not (order.points_redeemed or order.points_earned):
        return 0, 0  # nothing to settle: no need to ask the database
    restored, reversed_ = db.session.execute(
        select(func.coalesce(func.sum(Cancellation.points_restored), 0),
               func.coalesce(func.sum(Cancellation.points_reversed), 0))
        .where(Cancellation.order_id == order.id, Cancellation.reinstated_at.is_(None))).one()
    return int(restored), int(reversed_)


def plan_full_cancel(order, check_stock=True):
    """The effects of cancelling every open line of `order`. Reads only."""
    open_lines = [(item, item.open_quantity) for item in order.items if item.open_quantity > 0]
    restored, reversed_ = points_settled(order)
    impact = Impact(
        lines=stock_lines(order, open_lines, check_stock),
        refund_cents=order.refundable_cents, refund_method=order.payment_method,
        points_restored=max(order.points_redeemed - restored, 0) if order.customer_id else 0,
        points_reversed=max(order.points_earned - reversed_, 0) if order.customer_id else 0,
        notification_recipient=order.customer.email if order.customer else None)
    return impact
