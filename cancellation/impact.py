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


# How each tender's refund reaches the customer (the preview and the panel's dialog say it).
HOW = {"card": "processor", "debit": "processor", "cash": "counter",
       "store_credit": "store_credit"}


def refund_split(allocations):
    """The refund per tender, as the previews show it: [{"tender", "paid_in", "amount",
    "how"}] — `how`: through the payment processor, paid out at the counter, or store credit."""
    return [{"tender": a.tender, "paid_in": a.paid_in, "amount": money(a.amount),
             "amount_cents": a.amount, "how": HOW.get(a.tender, "processor")}
            for a in allocations]


@dataclass
class Impact:
    lines: list = field(default_factory=list)
    refund_cents: int = 0
    refund_method: str | None = None
    refunds: tuple = ()  # of plan.Allocation
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
                       "will_refund": self.refund_cents > 0,
                       "split": [{key: value for key, value in row.items()
                                  if key != "amount_cents"}
                                 for row in refund_split(self.refunds)]},
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


def plan_full_cancel(order, check_stock=True, request=None):
    """The effects of cancelling every open line of `order`: the Plan the cancellation would
    write (`locks.plans_for`), told for the preview. Reads only. `request`: what the refund
    would go back in is the request's (`refund_to`)."""
    [plan] = plans_for([(order, request, None)])
    items = {item.id: item for item in order.items}
    lines = [(items[line.item_id], line.quantity) for line in plan.lines]
    lines.sort(key=lambda line: line[0].id)
    return Impact(
        lines=stock_lines(order, lines, check_stock),
        refund_cents=plan.refund_cents, refund_method=order.payment_method,
        refunds=plan.refunds,
        points_restored=plan.amounts.points_restored if order.customer_id else 0,
        points_reversed=plan.amounts.points_reversed if order.customer_id else 0,
        notification_recipient=plan.recipient)
