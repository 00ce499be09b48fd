"""Asynchronous cancellations: the state an operator polls while a worker does the work."""
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models import db, utcnow


class CancelJob(db.Model):
    """One requested cancellation of one order: processing -> completed | failed
    (or pending_approval when policy sent it to an approver, queued in maintenance mode)."""

    __tablename__ = "cancel_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    payload: Mapped[dict] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16), default="api_v2")
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="processing", index=True)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancellation_id: Mapped[int | None] = mapped_column(ForeignKey("cancellations.id"))
    approval_request_id: Mapped[int | None] = mapped_column(ForeignKey("approval_requests.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
