"""Abuse monitoring: a flag raised when someone cancels unusually much. It never blocks anyone."""
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import db, utcnow


class AbuseFlag(db.Model):
    __tablename__ = "abuse_flags"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The store of the cancellation that raised it: who (which store managers) gets to see it.
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # hourly_volume / store_outlier
    window_start: Mapped[datetime] = mapped_column(DateTime)
    window_end: Mapped[datetime] = mapped_column(DateTime)
    count: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime)

    user = relationship("User", foreign_keys=[user_id])
    store = relationship("Store")
    acknowledged_by = relationship("User", foreign_keys=[acknowledged_by_id])

    @property
    def acknowledged(self):
        return self.acknowledged_at is not None
