"""The outbox: refunds and notifications written with the cancellation, delivered after commit.

MailMessage is the far side of the e-mail adapter: the mailbox it writes to, unique per
idempotency key, so no redelivery sends twice. (Refunds are paid by the payment processor over
HTTP, which keeps its own ledger by key: sandbox_processor/ here.)
"""
import enum
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import db, utcnow


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"
    PROCESSING = "processing"  # a worker is talking to the external party right now
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    VOIDED = "voided"  # the order was reinstated before this went out
    AWAITING_PAYOUT = "awaiting_payout"  # a cash refund, until staff pay it out at the counter


class _Deliverable:
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value,
                                        index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)


class Refund(_Deliverable, db.Model):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    cancellation_id: Mapped[int | None] = mapped_column(ForeignKey("cancellations.id"), index=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    # The tender the money goes back in (cash, debit, card, store_credit): the paying tender's,
    # or store credit when the customer chose it.
    method: Mapped[str | None] = mapped_column(String(24))
    # The payment it gives back (None on refunds older than payments).
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    gateway_reference: Mapped[str | None] = mapped_column(String(64))
    # The last attempt went out and its answer was lost: the processor may have paid it. The
    # next attempt looks the key up first; until then nothing may void it (reinstate.py).
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default=false())
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime)
    # A cash refund paid out at the counter: by whom, from which drawer.
    paid_out_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    drawer: Mapped[str | None] = mapped_column(String(40))

    order = relationship("Order", viewonly=True)
    payment = relationship("Payment", viewonly=True)
    paid_out_by = relationship("User", viewonly=True)

    @property
    def tender(self):
        return self.method


class Notification(_Deliverable, db.Model):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    cancellation_id: Mapped[int | None] = mapped_column(ForeignKey("cancellations.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16), default="email")
    template: Mapped[str] = mapped_column(String(40), default="order_cancelled")
    recipient: Mapped[str | None] = mapped_column(String(254))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)

    order = relationship("Order", viewonly=True)


class MailMessage(db.Model):
    __tablename__ = "mail_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
