"""Staff accounts, their roles and stores, and their API tokens (stored hashed)."""
import enum
import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, joinedload, mapped_column, relationship
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
    # Moves on every change of password, role or active flag (see _end_credentials below):
    # sessions, remember cookies and API tokens made under another generation stop working.
    auth_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

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
        """What Flask-Login keeps in the session and the remember cookie: the token of this
        sign-in (a LoginSession), never the bare user id, so that the server can end it."""
        return getattr(self, "login_token", None) or f"no-session-{self.id}"

    def __eq__(self, other):
        if isinstance(other, User):
            return self.id is not None and self.id == other.id
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
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The user's auth_generation when it was issued: a password, role or active-flag change
    # since ends it.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    user = relationship("User", back_populates="tokens")

    # last_used_at is written at most this often, so that a busy client does not turn every
    # read into a write.
    LAST_USED_RESOLUTION = timedelta(minutes=1)

    @classmethod
    def issue(cls, user, name="api", expires_at=None):
        """Create a token for user; returns (row, plain token). The caller commits."""
        plain = "cd_" + secrets.token_urlsafe(32)
        row = cls(user=user, name=name, token_hash=hash_token(plain), prefix=plain[:10],
                  expires_at=expires_at, generation=user.auth_generation or 0)
        db.session.add(row)
        return row, plain

    @property
    def state(self):
        """active, revoked, expired or ended (the user's credentials changed since)."""
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        if _credentials_changed(self.user, self.generation):
            return "ended"
        return "active"

    @classmethod
    def find(cls, plain):
        """The live token row a presented token is, or None."""
        # The token, its user and the user's stores in one statement: every API request asks.
        row = db.session.scalars(
            db.select(cls).where(cls.token_hash == hash_token(plain))
            .options(joinedload(cls.user).joinedload(User.stores))).unique().first()
        if row is None or row.state != "active":
            return None
        return row

    @classmethod
    def find_user(cls, plain):
        """The active user a presented token belongs to, or None; notes when it was used."""
        row = cls.find(plain)
        if row is None:
            return None
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at > cls.LAST_USED_RESOLUTION:
            # Its own short transaction: the request's session stays as the request left it.
            with db.engine.begin() as connection:
                connection.execute(update(cls).where(cls.id == row.id)
                                   .values(last_used_at=now))
            db.session.expire(row, ["last_used_at"])
        return row.user

    def revoke(self):
        """Compare-and-set: True for the caller that revoked it, False if it already was."""
        return db.session.execute(
            update(ApiToken).where(ApiToken.id == self.id, ApiToken.revoked.is_(False))
            .values(revoked=True, revoked_at=utcnow())
            .execution_options(synchronize_session="fetch")).rowcount == 1


class LoginSession(db.Model):
    """One sign-in to the panel: what the session and the remember cookie point at.

    Flask-Login keeps `token` (User.get_id) in the signed session cookie and, with "Keep me
    signed in", in the remember cookie; only its SHA-256 is stored. Signing out ends the row,
    so a copy of either cookie taken before stops working; a password, role or active-flag
    change ends every row of the user (auth_generation).
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    remember: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(200))

    user = relationship("User")

    @property
    def state(self):
        """active, signed out, expired, or ended (the user's credentials changed since)."""
        if self.ended_at is not None:
            return "signed out"
        if self.expires_at <= utcnow():
            return "expired"
        if _credentials_changed(self.user, self.generation):
            return "ended"
        return "active"

    @classmethod
    def start(cls, user, *, lifetime, remember=False, ip=None, user_agent=None):
        """A new sign-in for `user`; sets user.login_token for Flask-Login. Caller commits."""
        plain = secrets.token_urlsafe(32)
        now = utcnow()
        db.session.add(cls(user=user, token_hash=hash_token(plain),
                           generation=user.auth_generation or 0, remember=remember,
                           created_at=now, expires_at=now + lifetime, ip=(ip or "")[:64] or None,
                           user_agent=(user_agent or "")[:200] or None))
        user.login_token = plain
        return plain

    @classmethod
    def find_user(cls, plain):
        """The active user whose live sign-in `plain` is, or None (one query)."""
        if not plain or not isinstance(plain, str) or len(plain) > 100:
            return None
        found = db.session.execute(
            select(cls.generation, User).join(User, User.id == cls.user_id)
            .where(cls.token_hash == hash_token(plain), cls.ended_at.is_(None),
                   cls.expires_at > utcnow())).first()
        if found is None:
            return None
        generation, user = found
        if _credentials_changed(user, generation):
            return None
        user.login_token = plain
        return user

    KEPT_AFTER_END = timedelta(days=30)

    @classmethod
    def purge(cls):
        """Forget sign-ins that ended or expired over 30 days ago (the audit log keeps who
        signed in when). Returns how many; the caller commits."""
        cutoff = utcnow() - cls.KEPT_AFTER_END
        return db.session.execute(db.delete(cls).where(
            (cls.ended_at < cutoff) | (cls.expires_at < cutoff))).rowcount

    @classmethod
    def end(cls, plain):
        """Sign-out: end this sign-in (compare-and-set; True if this call ended it)."""
        if not plain:
            return False
        return db.session.execute(
            update(cls).where(cls.token_hash == hash_token(plain), cls.ended_at.is_(None))
            .values(ended_at=utcnow())).rowcount == 1


def _credentials_changed(user, generation):
    """The user's password, role or active flag changed since a credential was made under
    `generation`, or the user is deactivated: the credential opens nothing."""
    return user is not None and (generation != user.auth_generation or not user.is_active)


# The attributes whose change ends every session, remember cookie and API token of the user.
CREDENTIAL_ATTRIBUTES = ("password_hash", "role", "active")


@event.listens_for(Session, "before_flush")
def _end_credentials(session, _flush_context, _instances):
    """A user's password, role or active flag changed: move their auth_generation, which ends
    what was signed in under the old one — wherever the change is made (/admin, the CLI)."""
    for obj in session.dirty:
        if not isinstance(obj, User):
            continue
        state = inspect(obj)
        if any(state.attrs[name].history.has_changes() for name in CREDENTIAL_ATTRIBUTES):
            # In SQL (SET auth_generation = auth_generation + 1), not from the value read
            # earlier: two changes at once must move it twice.
            obj.auth_generation = User.auth_generation + 1
