"""Bulk cancellation: one job over many orders, one item per order.

Progress lives here, not in Celery's result backend: an item's status changes in the same
transaction as its order, so the counts a manager watches are exactly what has happened.
"""
import enum
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import db, utcnow


class BulkJobStatus(str, enum.Enum):
    QUEUED = "queued"          # accepted during maintenance; starts when it ends
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"          # nothing could be cancelled

    @property
    def label(self):
        return self.value.replace("_", " ").capitalize()


FINISHED_JOB_STATUSES = (BulkJobStatus.COMPLETED.value, BulkJobStatus.COMPLETED_WITH_ERRORS.value,
                         BulkJobStatus.FAILED.value)


class BulkItemStatus(str, enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BulkJob(db.Model):
    __tablename__ = "bulk_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="cancel")
    reason: Mapped[str] = mapped_column(String(40))
    notes: Mapped[str | None] = mapped_column(Text)
    notify_customer: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(24), default=BulkJobStatus.RUNNING.value,
                                        index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    # Final counts, written once when the job finishes (while it runs they are counted live).
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16), default="api_v1")
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    retry_of_id: Mapped[int | None] = mapped_column(ForeignKey("bulk_jobs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Last time work was handed to the workers (first dispatch or a watchdog re-dispatch).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime)
    redispatches: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    user = relationship("User")
    retry_of = relationship("BulkJob", remote_side=[id])

    @property
    def status_enum(self):
        return BulkJobStatus(self.status)

    @property
    def is_finished(self):
        return self.status in FINISHED_JOB_STATUSES


class BulkJobItem(db.Model):
    """One order of a bulk job. `order_id` is what was asked for: it may name no order at all
    (the item then fails with `not_found`), so it is not a foreign key."""

    __tablename__ = "bulk_job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "order_id", name="uq_bulk_job_items_job_order"),
        Index("ix_bulk_job_items_job_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("bulk_jobs.id", ondelete="CASCADE"))
    order_id: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16), default=BulkItemStatus.PENDING.value)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancellation_id: Mapped[int | None] = mapped_column(ForeignKey("cancellations.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    job = relationship("BulkJob")
