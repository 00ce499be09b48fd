"""Staff accounts, their roles and stores, and their API tokens (stored hashed)."""
import enum
import hashlib
import secrets
from datetime import datetime

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, String, Table, func
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from models import db, utcnow


class Role(str, enum.Enum):
    ADMIN = "admin"
    STORE_MANAGER = "store_manager"
    FULFILLMENT = "fulfillment"
    CUSTOMER_SERVICE = "customer_service"
    OPS_ENGINEER = "ops_engineer"

    @property
    def label(self):
        return self.value.replace("_", " ").title()


user_stores = Table(
    "user_stores",
    db.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("store_id", ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True),
)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32), default=Role.FULFILLMENT.value)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    stores = relationship("Store", secondary=user_stores, lazy="selectin")
    tokens = relationship("ApiToken", back_populates="user", cascade="all, delete-orphan")

    def __init__(self, **kwargs):
        if "email" in kwargs:
            kwargs["email"] = normalise_email(kwargs["email"])
        super().__init__(**kwargs)

    def __str__(self):
        return f"{self.name} <{self.email}>"

    # What Flask-Login asks of a user object (as its UserMixin provides it). Written here so the
    # models do not import Flask-Login: the workers never sign anyone in and need not load it.
    @property
    def is_active(self):
        return bool(self.active)

    @property
    def is_authenticated(self):
        return self.is_active

    @property
    def is_anonymous(self):
        return False

    def get_id(self):
        return str(self.id)

    def __eq__(self, other):
        if isinstance(other, User):
            return self.get_id() == other.get_id()
        return NotImplemented

    __hash__ = object.__hash__  # defining __eq__ would otherwise make users unhashable

    @property
    def role_enum(self):
        return Role(self.role)

    @property
    def store_ids(self):
        return {store.id for store in self.stores}

    @property
    def sees_every_store(self):
        return self.role in (Role.ADMIN.value, Role.OPS_ENGINEER.value)

    def set_password(self, password):
        self.password_hash = generate_password_hash(password)

    def check_password(self, password):
        return bool(self.password_hash) and check_password_hash(self.password_hash, password)

    @classmethod
    def by_email(cls, email):
        return db.session.scalar(
            db.select(cls).where(func.lower(cls.email) == normalise_email(email))
        )


def normalise_email(email):
    return (email or "").strip().lower()


def hash_token(token):
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(db.Model):
    """A bearer token; only its SHA-256 is stored, the plain value is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80), default="api")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)

    user = relationship("User", back_populates="tokens")

    @classmethod
    def issue(cls, user, name="api", expires_at=None):
        """Create a token for user; returns (row, plain token). The caller commits."""
        plain = "cd_" + secrets.token_urlsafe(32)
        row = cls(user=user, name=name, token_hash=hash_token(plain), prefix=plain[:10],
                  expires_at=expires_at)
        db.session.add(row)
        return row, plain

    @classmethod
    def find_user(cls, plain):
        """The active user a presented token belongs to, or None."""
        row = db.session.scalar(db.select(cls).where(cls.token_hash == hash_token(plain)))
        if row is None or row.revoked or not row.user.is_active:
            return None
        if row.expires_at is not None and row.expires_at < utcnow():
            return None
        return row.user
