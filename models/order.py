"""Orders and their lines. `version` is the optimistic lock every write checks."""
import enum
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import db, isoformat, money, utcnow


class OrderStatus(str, enum.Enum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"

    @property
    def label(self):
        return self.value.replace("_", " ").capitalize()


CANCELLABLE_STATUSES = (OrderStatus.PENDING.value, OrderStatus.IN_PROGRESS.value,
                        OrderStatus.ON_HOLD.value)


class PaymentStatus(str, enum.Enum):
    UNPAID = "unpaid"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    BALANCE_DUE = "balance_due"  # reinstated after its refund went out: owes it again


class ShipmentStatus(str, enum.Enum):
    NOT_SHIPPED = "not_shipped"
    READY_FOR_PICKUP = "ready_for_pickup"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"


class Order(db.Model):
    __tablename__ = "orders"
    # The orders list (cancellation.orders) at a million orders: every filter it starts from
    # (store, store + status, status, nothing) has an index in its order, placed_at then id; it
    # counts from ix_orders_store_status, which deduplication makes a few pages per hundred
    # thousand orders. The search's substrings are trigram indexes on PostgreSQL (plain ones
    # elsewhere, where they only keep the schemas equal).
    __table_args__ = (
        Index("ix_orders_store_status", "store_id", "status"),
        Index("ix_orders_store_status_placed", "store_id", "status", "placed_at", "id"),
        Index("ix_orders_store_placed", "store_id", "placed_at", "id"),
        Index("ix_orders_status_placed", "status", "placed_at", "id"),
        Index("ix_orders_placed_at", "placed_at"),
        Index("ix_orders_number_trgm", "number", postgresql_using="gin",
              postgresql_ops={"number": "gin_trgm_ops"}),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.PENDING.value)
    placed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    subtotal_cents: Mapped[int] = mapped_column(Integer, default=0)
    tax_cents: Mapped[int] = mapped_column(Integer, default=0)
    discount_cents: Mapped[int] = mapped_column(Integer, default=0)
    total_cents: Mapped[int] = mapped_column(Integer, default=0)
    payment_status: Mapped[str] = mapped_column(String(24), default=PaymentStatus.UNPAID.value)
    paid_cents: Mapped[int] = mapped_column(Integer, default=0)
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0)
    payment_method: Mapped[str | None] = mapped_column(String(24))  # the first payment's tender
    # What the customer owes again: refunds that had gone out when the order was reinstated,
    # until it is paid (at pickup, from store credit). cancellation/reinstate.py, payments.py.
    balance_due_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    points_earned: Mapped[int] = mapped_column(Integer, default=0)
    points_redeemed: Mapped[int] = mapped_column(Integer, default=0)
    billing_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    shipment_status: Mapped[str] = mapped_column(String(24),
                                                 default=ShipmentStatus.NOT_SHIPPED.value)
    series_id: Mapped[str | None] = mapped_column(String(32), index=True)
    series_position: Mapped[int | None] = mapped_column(Integer)
    previous_status: Mapped[str | None] = mapped_column(String(16))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    store = relationship("Store")
    customer = relationship("Customer")
    items = relationship("OrderItem", back_populates="order", order_by="OrderItem.id",
                         cascade="all, delete-orphan")
    cancellations = relationship("Cancellation", back_populates="order",
                                 order_by="Cancellation.id")
    refunds = relationship("Refund", order_by="Refund.id", viewonly=True)
    payments = relationship("Payment", back_populates="order", order_by="Payment.id",
                            cascade="all, delete-orphan")
    notifications = relationship("Notification", order_by="Notification.id", viewonly=True)

    # SQLAlchemy adds "AND version = :old" to every UPDATE and bumps it: a concurrent writer's
    # stale copy fails with StaleDataError instead of silently overwriting.
    __mapper_args__ = {"version_id_col": version}

    def __str__(self):
        return self.number

    @property
    def status_enum(self):
        return OrderStatus(self.status)

    @property
    def is_cancellable(self):
        return self.status in CANCELLABLE_STATUSES

    @property
    def total(self):
        return money(self.total_cents)

    @property
    def refundable_cents(self):
        return max(self.paid_cents - self.refunded_cents, 0)

    @property
    def age_days(self):
        return (utcnow() - self.placed_at).days

    @property
    def open_quantity(self):
        return sum(item.open_quantity for item in self.items)


class OrderItem(db.Model):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(Integer)
    cancelled_quantity: Mapped[int] = mapped_column(Integer, default=0)

    order = relationship("Order", back_populates="items")
    product = relationship("Product", lazy="joined")

    @property
    def open_quantity(self):
        return self.quantity - self.cancelled_quantity

    @property
    def line_total_cents(self):
        return self.quantity * self.unit_price_cents

    def to_dict(self):
        return {"id": self.id, "product_id": self.product_id, "sku": self.product.sku,
                "name": self.product.name, "quantity": self.quantity,
                "cancelled_quantity": self.cancelled_quantity,
                "unit_price": money(self.unit_price_cents)}


__all__ = ["Order", "OrderItem", "OrderStatus", "PaymentStatus", "ShipmentStatus",
           "CANCELLABLE_STATUSES", "isoformat"]
