"""How an order was paid, and the customers' store credit.

An order is paid by one or more payments, each in one tender. A cancellation refunds back to the
payments that paid (cancellation/plan.py `allocate`), never more than each paid: `refunded_cents`
on a payment is what has gone back of it, whatever tender it went back in.

Store credit is a ledger per customer: every movement is an entry (a refund given as credit, a
reinstatement taking it back, credit spent on a payment), and `Customer.store_credit_cents` is
their sum, kept in the same transaction as the entry.
"""
import enum
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import db, money, utcnow


class Tender(str, enum.Enum):
    CASH = "cash"
    DEBIT = "debit"
    CARD = "card"
    STORE_CREDIT = "store_credit"

    @property
    def label(self):
        return {"cash": "Cash", "debit": "Debit", "card": "Card",
                "store_credit": "Store credit"}[self.value]


TENDERS = tuple(t.value for t in Tender)
# Paid back through the payment processor's API; cash goes back at the counter, store credit to
# the customer's ledger.
PROCESSOR_TENDERS = (Tender.CARD.value, Tender.DEBIT.value)


class Payment(db.Model):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    tender: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(Integer)
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    processor_reference: Mapped[str | None] = mapped_column(String(64))
    # Who took it, at which drawer: set for payments taken at the counter (a balance due paid at
    # pickup); None for the payments the order was placed with.
    taken_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    drawer: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    order = relationship("Order", back_populates="payments")
    taken_by = relationship("User")

    @property
    def refundable_cents(self):
        return max(self.amount_cents - self.refunded_cents, 0)

    @property
    def tender_label(self):
        return Tender(self.tender).label if self.tender in TENDERS else self.tender

    def to_dict(self):
        return {"id": self.id, "tender": self.tender, "amount": money(self.amount_cents),
                "refunded": money(self.refunded_cents),
                "processor_reference": self.processor_reference}


class StoreCreditKind(str, enum.Enum):
    REFUND = "refund"  # a cancellation's refund given as store credit
    REINSTATEMENT = "reinstatement"  # a reinstated order takes its credit back
    SPENT = "spent"  # paid a balance due with it


class StoreCreditEntry(db.Model):
    """One movement of a customer's store credit, signed (+ credit, - debit)."""

    __tablename__ = "store_credit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    cancellation_id: Mapped[int | None] = mapped_column(ForeignKey("cancellations.id"))
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    amount_cents: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(200))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    customer = relationship("Customer")
    order = relationship("Order")
    actor = relationship("User")
