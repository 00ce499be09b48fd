"""Customers and their loyalty ledger."""
import enum
from datetime import datetime

from sqlalchemy import Computed, DateTime, ForeignKey, Index, Integer, String, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.functions import FunctionElement

from models import db, utcnow

PHONE_SEPARATORS = (" ", "-", "(", ")", "+", ".", "/")


class digits_of(FunctionElement):
    """SQL: the digits of a phone number (what Customer.phone_digits holds). PostgreSQL drops
    every non-digit; SQLite, without regexp_replace, drops the usual separators."""

    type = String()
    name = "digits_of"
    inherit_cache = True


@compiles(digits_of)
def _phone_digits(element, compiler, **kw):
    text = compiler.process(element.clauses, **kw)
    for separator in PHONE_SEPARATORS:
        text = f"replace({text}, '{separator}', '')"
    return text


@compiles(digits_of, "postgresql")
def _phone_digits_postgresql(element, compiler, **kw):
    return f"regexp_replace({compiler.process(element.clauses, **kw)}, '[^0-9]+', '', 'g')"


class Customer(db.Model):
    __tablename__ = "customers"
    # The orders list's search (cancellation.orders): a substring of the name, the e-mail or the
    # phone's digits, ignoring case — trigram indexes on PostgreSQL (plain ones on SQLite).
    __table_args__ = (
        Index("ix_customers_name_trgm", "name", postgresql_using="gin",
              postgresql_ops={"name": "gin_trgm_ops"}),
        Index("ix_customers_email_trgm", "email", postgresql_using="gin",
              postgresql_ops={"email": "gin_trgm_ops"}),
        Index("ix_customers_phone_digits_trgm", "phone_digits", postgresql_using="gin",
              postgresql_ops={"phone_digits": "gin_trgm_ops"}),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    # The phone's digits, kept by the database (a generated column): what a phone number typed
    # with or without punctuation is looked up by.
    phone_digits: Mapped[str | None] = mapped_column(
        String(32), Computed(digits_of(literal_column("phone"))))
    loyalty_points: Mapped[int] = mapped_column(Integer, default=0)
    # The sum of the customer's store credit ledger (models/payment.py StoreCreditEntry).
    store_credit_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def __str__(self):
        return self.name


class LoyaltyKind(str, enum.Enum):
    EARNED = "earned"
    REDEEMED = "redeemed"
    RESTORED = "restored"
    REVERSED = "reversed"


class LoyaltyEntry(db.Model):
    """One movement of a customer's points; points are signed (+ credit, - debit)."""

    __tablename__ = "loyalty_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    cancellation_id: Mapped[int | None] = mapped_column(ForeignKey("cancellations.id"))
    points: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    customer = relationship("Customer")
    cancellation = relationship("Cancellation")
