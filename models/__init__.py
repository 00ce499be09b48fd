"""The one model set shared by every blueprint and task."""
from datetime import UTC, datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Model(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


db = SQLAlchemy(model_class=Model)


def utcnow():
    """Naive UTC: stored the same way on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(moment):
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def money(cents):
    """Cents as the decimal string the API and panel show: 1234 -> '12.34'."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


from models.audit import AuditChainHead, AuditEvent  # noqa: E402
from models.bulk import BulkJob, BulkJobItem  # noqa: E402
from models.cancellation import ApprovalRequest, Cancellation, CancellationItem  # noqa: E402
from models.customer import Customer, LoyaltyEntry, LoyaltyKind  # noqa: E402
from models.delivery import DeliveryStatus, MailMessage, Notification, Refund  # noqa: E402
from models.idempotency import IdempotencyKey  # noqa: E402
from models.inventory import Product, StockLevel  # noqa: E402
from models.jobs import CancelJob  # noqa: E402
from models.order import Order, OrderItem, OrderStatus, PaymentStatus, ShipmentStatus  # noqa: E402
from models.oversight import AbuseFlag  # noqa: E402
from models.payment import (  # noqa: E402
    PROCESSOR_TENDERS,
    TENDERS,
    Payment,
    StoreCreditEntry,
    StoreCreditKind,
    Tender,
)
from models.setting import Setting  # noqa: E402
from models.store import Store  # noqa: E402
from models.user import ApiToken, LoginSession, Role, User, user_stores  # noqa: E402

__all__ = [
    "db", "utcnow", "isoformat", "money", "Store", "ApiToken", "LoginSession", "Role", "User",
    "user_stores",
    "Customer", "LoyaltyEntry", "LoyaltyKind", "Product", "StockLevel", "Order", "OrderItem",
    "OrderStatus", "PaymentStatus", "ShipmentStatus", "ApprovalRequest", "Cancellation",
    "CancellationItem", "DeliveryStatus", "MailMessage", "Notification", "Refund",
    "AuditChainHead", "AuditEvent", "Setting", "IdempotencyKey", "CancelJob",
    "AbuseFlag", "BulkJob", "BulkJobItem", "Payment", "StoreCreditEntry", "StoreCreditKind",
    "Tender", "TENDERS", "PROCESSOR_TENDERS",
]
