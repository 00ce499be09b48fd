"""What a full cancellation of an order would do, told without changing anything (the previews).

`plan_full_cancel` tells the Plan the cancellation itself writes (`cancellation/plan.py`), so the
preview can never promise something the cancel does not do.
"""
from dataclasses import dataclass, field

from sqlalchemy import select

from cancellation.locks import plans_for
from models import StockLevel, db, money


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


def plan_full_cancel(order, check_stock=True):
    """The effects of cancelling every open line of `order`: the Plan the cancellation would
    write (`locks.plans_for`), told for the preview. Reads only."""
    [plan] = plans_for([(order, None, None)])
    items = {item.id: item for item in order.items}
    lines = [(items[line.item_id], line.quantity) for line in plan.lines]
    lines.sort(key=lambda line: line[0].id)
    return Impact(
        lines=stock_lines(order, lines, check_stock),
        refund_cents=plan.refund_cents, refund_method=order.payment_method,
        points_restored=plan.amounts.points_restored if order.customer_id else 0,
        points_reversed=plan.amounts.points_reversed if order.customer_id else 0,
        notification_recipient=plan.recipient)
