"""What a cancellation did, and requests for one that needs approval."""
from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import db, utcnow
from models.delivery import DeliveryStatus, _Deliverable


class Cancellation(db.Model):
    __tablename__ = "cancellations"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="full")  # full / partial
    reason: Mapped[str] = mapped_column(String(40), index=True)
    notes: Mapped[str | None] = mapped_column(Text)
    request_contact: Mapped[str | None] = mapped_column(String(254))
    request_channel: Mapped[str | None] = mapped_column(String(24))
    requested_at: Mapped[datetime | None] = mapped_column(DateTime)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    source: Mapped[str] = mapped_column(String(16), default="panel")
    previous_status: Mapped[str] = mapped_column(String(16))
    refund_cents: Mapped[int] = mapped_column(Integer, default=0)
    # Where the refund went: "original" (the tenders that paid) or "store_credit" (the customer
    # agreed to take credit instead, for `refund_to_reason`).
    refund_to: Mapped[str] = mapped_column(String(16), default="original",
                                           server_default="original")
    refund_to_reason: Mapped[str | None] = mapped_column(Text)
    # What it took off a balance due (an order reinstated after its refund went out, cancelled
    # again): owed no more — and owed again if this cancellation is reinstated.
    balance_cleared_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The value cancelled: what this cancellation took off the order's subtotal, tax, discount
    # and total. The one that leaves nothing open puts the order's totals back to what it was
    # placed for (cancellation/plan.py), so these are also what a reinstatement takes off again.
    subtotal_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tax_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    discount_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    points_restored: Mapped[int] = mapped_column(Integer, default=0)
    points_reversed: Mapped[int] = mapped_column(Integer, default=0)
    notify_customer: Mapped[bool] = mapped_column(Boolean, default=True)
    flag_inventory_reconciliation: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_manual_refund: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_manual_notification: Mapped[bool] = mapped_column(Boolean, default=False)
    # The order's version right after this cancellation: a reinstatement is refused when the
    # order changed since.
    order_version: Mapped[int | None] = mapped_column(Integer)
    reinstated_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    order = relationship("Order", back_populates="cancellations")
    actor = relationship("User")
    items = relationship("CancellationItem", back_populates="cancellation",
                         cascade="all, delete-orphan", order_by="CancellationItem.id")
    refunds = relationship("Refund", order_by="Refund.id", viewonly=True)

    def refund_shares(self):
        """[(tender, cents)]: what goes back in each tender (voided refunds left out), in the
        order of the refunds."""
        shares = {}
        for refund in self.refunds:
            if refund.status != DeliveryStatus.VOIDED.value:
                shares[refund.method] = shares.get(refund.method, 0) + refund.amount_cents
        return list(shares.items())


class CancellationItem(db.Model):
    __tablename__ = "cancellation_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    cancellation_id: Mapped[int] = mapped_column(ForeignKey("cancellations.id",
                                                            ondelete="CASCADE"), index=True)
    order_item_id: Mapped[int] = mapped_column(ForeignKey("order_items.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    stock_returned: Mapped[bool] = mapped_column(Boolean, default=False)

    cancellation = relationship("Cancellation", back_populates="items")
    product = relationship("Product", lazy="joined")


class ApprovalRequest(db.Model):
    """A cancellation someone asked for but may not perform; `payload` is exactly what to do."""

    __tablename__ = "approval_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    justification: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSON)
    why: Mapped[list] = mapped_column(JSON, default=list)
    order_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The approval workflow (cancellation/approvals.py): when approvers were looked up and told,
    # when nobody at the store could decide and admins took over, when it lapses undecided.
    routed_at: Mapped[datetime | None] = mapped_column(DateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    # Why a request ended without a decision (stale, expired), in words for the requester.
    status_detail: Mapped[str | None] = mapped_column(Text)
    cancellation_id: Mapped[int | None] = mapped_column(ForeignKey("cancellations.id"))
    # The requester saw the outcome in the panel (the navbar badge stops counting it).
    requester_seen_at: Mapped[datetime | None] = mapped_column(DateTime)

    order = relationship("Order")
    requested_by = relationship("User", foreign_keys=[requested_by_id])
    decided_by = relationship("User", foreign_keys=[decided_by_id])
    cancellation = relationship("Cancellation")


class ApprovalNotice(_Deliverable, db.Model):
    """An e-mail about an approval request (to an approver or the requester), in the outbox.

    Written in the transaction that changed the request, delivered by a worker through the
    notification adapter, keyed so no redelivery sends it twice.
    """

    __tablename__ = "approval_notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    approval_request_id: Mapped[int] = mapped_column(ForeignKey("approval_requests.id"),
                                                     index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    event: Mapped[str] = mapped_column(String(16))  # requested / escalated / approved / ...
    recipient: Mapped[str] = mapped_column(String(254))

    approval_request = relationship("ApprovalRequest")
    user = relationship("User")
