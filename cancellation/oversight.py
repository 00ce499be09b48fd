"""Oversight: cancellation analytics, abuse monitoring, the compliance report, the audit log's
queries and redaction. (Sign-in throttling is `cancellation.signin`.)

Everything here reads with aggregate SQL (GROUP BY, COUNT over indexed columns) or streams with
`yield_per`, so the dashboard and the exports stay cheap however many cancellations there are.
Nothing here ever blocks a cancellation: abuse monitoring only raises a flag for a person to look
at.
"""
import csv
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from cancellation.audit import SYSTEM, record
from cancellation.errors import NotFound, ValidationFailed
from cancellation.policy import store_scope
from cancellation.privacy import redact
from cancellation.reasons import label_for
from cancellation.transactions import commit_keeping
from models import (
    AbuseFlag,
    ApprovalRequest,
    AuditEvent,
    Cancellation,
    CancellationItem,
    Order,
    OrderItem,
    Product,
    Setting,
    Store,
    User,
    db,
    isoformat,
    money,
    utcnow,
)

log = logging.getLogger(__name__)

PERIODS = {"7": 7, "30": 30, "90": 90}
MAX_CUSTOM_DAYS = 366
CSV_CHUNK_ROWS = 200
STREAM_BATCH = 500


# --- store scope -----------------------------------------------------------------------------

def _zone(name):
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# --- dashboard: cancellation analytics -------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """Whole UTC days from `start` to `end`, both included."""

    start: date
    end: date
    key: str  # "7", "30", "90" or "custom"

    @property
    def days(self):
        return (self.end - self.start).days + 1

    @property
    def since(self):
        return datetime.combine(self.start, time.min)

    @property
    def until(self):
        return datetime.combine(self.end + timedelta(days=1), time.min)

    @classmethod
    def from_args(cls, args, today=None):
        """?period=7|30|90, or ?from=YYYY-MM-DD&to=YYYY-MM-DD; anything unusable falls back."""
        today = today or utcnow().date()
        start, end = query_date(args.get("from")), query_date(args.get("to"))
        if args.get("period") == "custom" or (start or end) and args.get("period") is None:
            # Not after today, and late enough that a year before it is still a date.
            earliest = date.min + timedelta(days=MAX_CUSTOM_DAYS)
            end = max(min(end or today, today), earliest)
            start = max(min(start or end - timedelta(days=29), today), earliest)
            if start > end:
                start, end = end, start
            start = max(start, end - timedelta(days=MAX_CUSTOM_DAYS - 1))
            return cls(start, end, "custom")
        key = args.get("period") if args.get("period") in PERIODS else "30"
        return cls(today - timedelta(days=PERIODS[key] - 1), today, key)


# --- query strings: what cannot be used is ignored, so a bookmark never errors ---------------

ID_MAX = 2**31 - 1  # the largest id an id column holds (PostgreSQL integer)


def query_int(value, maximum=ID_MAX):
    """A whole number from 0 to `maximum` (a row id by default), or None."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= maximum else None


FIRST_DAY, LAST_DAY = date.min + timedelta(days=1), date.max - timedelta(days=1)


def query_date(value, field=None):
    """A YYYY-MM-DD date, or None. Named filters (`field`) refuse a date at the very edge of the
    calendar with a clear 400: a day whose start or end cannot be stored in every time zone is
    no day anybody means (`to=9999-12-31`)."""
    try:
        day = date.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None
    if field is not None and day is not None and not FIRST_DAY <= day <= LAST_DAY:
        raise ValidationFailed(
            f"The {field} date must be between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()}.",
            details={"fields": [{"field": field, "message": "is outside the calendar"}]})
    return day


def query_text(value, limit):
    """Stripped text cut to `limit` characters, or None when blank — or when it holds NUL:
    no text column can hold one (PostgreSQL refuses it even in a query), so such a filter is
    ignored like any other unusable value."""
    text = (value or "").strip()[:limit]
    return text if text and "\x00" not in text else None


def first_moment_after(day):
    """Midnight (UTC, naive) ending `day`; None after the last day a date can hold."""
    return None if day >= date.max else datetime.combine(day + timedelta(days=1), time.min)


@dataclass
class Breakdown:
    """One chart's numbers: rows of (key, label, count, refunded cents), biggest first."""

    rows: list = field(default_factory=list)

    @property
    def total(self):
        return sum(row["count"] for row in self.rows)

    def chart(self):
        return {"labels": [row["label"] for row in self.rows],
                "counts": [row["count"] for row in self.rows]}


def _cancellations_in(user, period, store_id=None):
    """The WHERE of every dashboard aggregate: the period, the user's stores, a chosen store."""
    conditions = [Cancellation.created_at >= period.since, Cancellation.created_at < period.until]
    scope = store_scope(user)
    if scope is not None:
        conditions.append(Order.store_id.in_(scope))
    if store_id is not None:
        conditions.append(Order.store_id == store_id)
    return conditions


def _grouped(user, period, store_id, *columns):
    count = func.count(Cancellation.id).label("count")
    refunded = func.coalesce(func.sum(Cancellation.refund_cents), 0).label("refunded")
    query = (select(*columns, count, refunded).select_from(Cancellation)
             .join(Order, Order.id == Cancellation.order_id)
             .where(*_cancellations_in(user, period, store_id)).group_by(*columns))
    return query


def cancellation_stats(user, period, store_id=None):
    """Cancellations by reason, store, staff member and day: four GROUP BY queries."""
    by_reason = Breakdown([
        {"key": reason, "label": label_for(reason), "count": count, "refunded": refunded}
        for reason, count, refunded in db.session.execute(
            _grouped(user, period, store_id, Cancellation.reason))])
    by_store = Breakdown([
        {"key": sid, "label": name, "count": count, "refunded": refunded}
        for sid, name, count, refunded in db.session.execute(
            _grouped(user, period, store_id, Order.store_id, Store.name)
            .join(Store, Store.id == Order.store_id))])
    staff_query = (_grouped(user, period, store_id, Cancellation.actor_id, User.name, User.email)
                   .outerjoin(User, User.id == Cancellation.actor_id))
    by_staff = Breakdown([
        {"key": actor_id, "label": name or "System", "email": email, "count": count,
         "refunded": refunded}
        for actor_id, name, email, count, refunded in db.session.execute(staff_query)])
    day = func.date(Cancellation.created_at).label("day")
    counted = {str(d)[:10]: (count, refunded)
               for d, count, refunded in db.session.execute(_grouped(user, period, store_id, day))}
    by_day = Breakdown()
    for offset in range(period.days):  # every day of the period, the quiet ones as zeros
        moment = period.start + timedelta(days=offset)
        count, refunded = counted.get(moment.isoformat(), (0, 0))
        by_day.rows.append({"key": moment.isoformat(), "label": moment.strftime("%b %d"),
                            "count": count, "refunded": refunded})
    for breakdown in (by_reason, by_store, by_staff):
        breakdown.rows.sort(key=lambda row: (-row["count"], str(row["label"])))
    return {"reason": by_reason, "store": by_store, "staff": by_staff, "day": by_day}


def pending_approvals_count(user):
    query = (select(func.count(ApprovalRequest.id))
             .join(Order, Order.id == ApprovalRequest.order_id)
             .where(ApprovalRequest.status.in_(("pending", "escalated"))))
    scope = store_scope(user)
    if scope is not None:
        query = query.where(Order.store_id.in_(scope))
    return db.session.scalar(query) or 0


def manual_handling(user, limit=25):
    """Cancellations waiting for a person (newest first, at most `limit`) and how many in all."""
    needs_person = or_(Cancellation.flag_manual_refund, Cancellation.flag_manual_notification,
                       Cancellation.flag_inventory_reconciliation)
    scope = store_scope(user)
    conditions = [needs_person] + ([Order.store_id.in_(scope)] if scope is not None else [])
    total = db.session.scalar(select(func.count(Cancellation.id))
                              .join(Order, Order.id == Cancellation.order_id).where(*conditions))
    rows = db.session.execute(
        select(Cancellation, Order.number, Order.id, Store.name)
        .join(Order, Order.id == Cancellation.order_id).join(Store, Store.id == Order.store_id)
        .where(*conditions).order_by(Cancellation.created_at.desc(), Cancellation.id.desc())
        .limit(limit)).all()
    return rows, total or 0


# --- abuse monitoring ------------------------------------------------------------------------

HOURLY = "hourly_volume"
OUTLIER = "store_outlier"
KIND_LABELS = {HOURLY: "Many cancellations in an hour",
               OUTLIER: "Far above the store's average"}
# Once flagged, the same person is not flagged again for the same thing for this long; the open
# flag's count keeps up instead.
REFLAG_AFTER = {HOURLY: timedelta(hours=1), OUTLIER: timedelta(hours=24)}
OUTLIER_WINDOW = timedelta(days=7)
# Up to this many of the other staff's cancellations are read to rule an outlier out early; past
# it, reading them all costs no more.
OUTLIER_PROBE_ROWS = 500


def after_cancellations(actor, store_id, context=None, keep=()):
    """Run after cancellations committed — one, or a bulk job's (once per job and store): flag
    unusual cancelling. Never raises, never blocks. `keep`: objects the caller reads again right
    after, current already (transactions.commit_keeping)."""
    try:
        flags = check_abuse(actor.id, store_id, context)
        commit_keeping(*keep)
        return flags
    except Exception:  # noqa: BLE001 - monitoring must never fail a bulk job
        db.session.rollback()
        log.warning("abuse check after a bulk batch by user %s failed", actor.id, exc_info=True)
        return []


def check_abuse(user_id, store_id, context=None, now=None):
    """Both checks; returns the flags raised (not committed).

    Every count is read before any flag is written: a flag's row stays locked until the commit,
    and the same person's next cancellation (another tab, another API client) waits for it.
    """
    now = now or utcnow()
    raised = []
    limit = int(Setting.get("abuse_cancels_per_hour"))
    hour_ago = now - timedelta(hours=1)
    in_hour = db.session.scalar(select(func.count(Cancellation.id)).where(
        Cancellation.actor_id == user_id, Cancellation.created_at >= hour_ago))
    week_ago = now - OUTLIER_WINDOW
    outlier = store_outlier(user_id, store_id, week_ago)
    if in_hour > limit:
        raised += _raise(user_id, store_id, HOURLY, hour_ago, now, in_hour,
                         f"{in_hour} cancellations in the last hour (the limit is {limit}).",
                         context)
    if outlier:
        raised += _raise(user_id, store_id, OUTLIER, week_ago, now, outlier[0], outlier[1],
                         context)
    return raised


def store_outlier(user_id, store_id, since):
    """(count, detail) when the user cancelled at the store since `since` at least
    abuse_outlier_min_count times and more than abuse_outlier_factor times the average of the
    store's other staff; else None."""
    min_count = int(Setting.get("abuse_outlier_min_count"))
    factor = float(Setting.get("abuse_outlier_factor"))
    # Fewer than min_count is never an outlier: the user's own rows first (by actor_id), the
    # other staff's only when it can matter.
    mine = db.session.scalar(
        select(func.count(Cancellation.id)).join(Order, Order.id == Cancellation.order_id)
        .where(Cancellation.actor_id == user_id, Order.store_id == store_id,
               Cancellation.created_at >= since))
    if mine < min_count:
        return None
    others = _other_staff_counts(user_id, store_id, since, mine, factor)
    if not others:  # nobody else to compare with, or far more cancelling than the user's
        return None
    average = sum(others.values()) / len(others)
    if mine <= factor * average:
        return None
    store = db.session.get(Store, store_id)
    return mine, (f"{mine} cancellations at {store.name if store else 'the store'} in 7 days; "
                  f"the store's {len(others)} other staff averaged {average:.1f} "
                  f"(flagged above {factor:g}×).")


def _other_staff_counts(user_id, store_id, since, mine, factor):
    """{actor id: cancellations} of the store's other staff since `since`; None when they
    cancelled so often that `mine` cannot be above `factor` times their average.

    There are at most as many other staff as other users (n): once their cancellations add up
    to more than mine * n / factor, their average is above mine / factor whoever they are. So
    no more of their rows than that are read (LIMIT) — not a busy store's whole week — and
    when fewer exist, those are all of them."""
    theirs = [Order.store_id == store_id, Cancellation.created_at >= since,
              Cancellation.actor_id.is_not(None), Cancellation.actor_id != user_id]
    enough = None
    if factor > 0:
        users = db.session.scalar(select(func.count(User.id)).where(User.id != user_id))
        enough = int(mine * users / factor) + 1
    if enough is not None and enough <= OUTLIER_PROBE_ROWS:
        rows = (select(Cancellation.actor_id).join(Order, Order.id == Cancellation.order_id)
                .where(*theirs).limit(enough).subquery())
        counted = dict(db.session.execute(
            select(rows.c.actor_id, func.count()).group_by(rows.c.actor_id)).all())
        return None if sum(counted.values()) >= enough else counted
    return dict(db.session.execute(
        select(Cancellation.actor_id, func.count(Cancellation.id))
        .join(Order, Order.id == Cancellation.order_id).where(*theirs)
        .group_by(Cancellation.actor_id)).all())


def _raise(user_id, store_id, kind, since, now, count, detail, context):
    recent = select(AbuseFlag).where(AbuseFlag.user_id == user_id, AbuseFlag.kind == kind,
                                     AbuseFlag.created_at >= now - REFLAG_AFTER[kind])
    if kind == OUTLIER:
        recent = recent.where(AbuseFlag.store_id == store_id)
    existing = db.session.scalar(recent.order_by(AbuseFlag.id.desc()).limit(1))
    if existing is not None:
        if not existing.acknowledged and count > existing.count:
            existing.count, existing.window_end, existing.detail = count, now, detail
        return []
    flag = AbuseFlag(user_id=user_id, store_id=store_id, kind=kind, window_start=since,
                     window_end=now, count=count, detail=detail, created_at=now)
    db.session.add(flag)
    db.session.flush()
    user = db.session.get(User, user_id)
    record(None, "abuse.flagged", target_type="user", target_id=user_id, store_id=store_id,
           after={"flag_id": flag.id, "kind": kind, "count": count, "detail": detail,
                  "user": user.email if user else None, "window_start": isoformat(since),
                  "window_end": isoformat(now)},
           context=context or SYSTEM)
    return [flag]


def abuse_flags(user, include_acknowledged_days=7, limit=50):
    """Open flags, and those acknowledged lately, in the user's stores; newest first."""
    query = select(AbuseFlag).where(or_(
        AbuseFlag.acknowledged_at.is_(None),
        AbuseFlag.acknowledged_at >= utcnow() - timedelta(days=include_acknowledged_days)))
    scope = store_scope(user)
    if scope is not None:
        query = query.where(AbuseFlag.store_id.in_(scope))
    # With who was flagged, where, and who acknowledged: shown for every flag, read at once.
    return db.session.scalars(query.order_by(AbuseFlag.acknowledged_at.is_not(None),
                                             AbuseFlag.created_at.desc(), AbuseFlag.id.desc())
                              .limit(limit).options(
                                  selectinload(AbuseFlag.user), selectinload(AbuseFlag.store),
                                  selectinload(AbuseFlag.acknowledged_by))).all()


def acknowledge_flag(flag_id, actor, context):
    """An admin has looked at the flag. Acknowledging twice changes nothing."""
    flag = db.session.get(AbuseFlag, flag_id)
    if flag is None:
        raise NotFound("Abuse flag not found.")
    if flag.acknowledged:
        return flag, False
    flag.acknowledged_by_id, flag.acknowledged_at = actor.id, utcnow()
    record(actor, "abuse.acknowledged", target_type="abuse_flag", target_id=flag.id,
           store_id=flag.store_id, after={"flag_id": flag.id, "kind": flag.kind,
                                          "user_id": flag.user_id, "count": flag.count},
           context=context)
    db.session.commit()
    return flag, True


# --- compliance report -----------------------------------------------------------------------

COMPLIANCE_HEADER = [
    "store", "licence_number", "business_date", "cancelled_at_local", "cancelled_at_utc",
    "order_number", "order_placed_at_utc", "cancellation_id", "kind", "previous_status", "sku",
    "product", "quantity_voided", "unit_price", "line_amount", "order_total",
    "cancellation_refund", "reason_code", "reason", "cancelled_by", "cancelled_by_role",
    "source", "stock_returned", "reinstated_at_utc",
]


def store_day_bounds(store, day):
    """The store's local business day as the naive-UTC range the database keeps."""
    zone = _zone(store.timezone)
    start = datetime.combine(day, time.min, tzinfo=zone).astimezone(ZoneInfo("UTC"))
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone) \
        .astimezone(ZoneInfo("UTC"))
    return start.replace(tzinfo=None), end.replace(tzinfo=None)


def compliance_day(value):
    """The business day asked for; a day whose bounds in any time zone are still dates."""
    day = query_date(value)
    if day is None or not date.min < day < date.max:
        raise ValidationFailed("Choose the business day to report on (YYYY-MM-DD), between "
                               f"{date.min + timedelta(days=1)} and "
                               f"{date.max - timedelta(days=1)}.")
    return day


def compliance_store(user, store_id):
    """The store if the user may report on it; 404 otherwise (another store is not revealed)."""
    store = db.session.get(Store, store_id) if store_id is not None else None
    scope = store_scope(user)
    if store is None or (scope is not None and store.id not in scope):
        raise NotFound("Store not found.")
    return store


def compliance_rows(store, day):
    """One row per voided line of the store's business day, oldest first, streamed."""
    since, until = store_day_bounds(store, day)
    zone = _zone(store.timezone)
    query = (select(Cancellation, CancellationItem, Order, OrderItem, Product, User)
             .join(CancellationItem, CancellationItem.cancellation_id == Cancellation.id)
             .join(Order, Order.id == Cancellation.order_id)
             .join(OrderItem, OrderItem.id == CancellationItem.order_item_id)
             .join(Product, Product.id == CancellationItem.product_id)
             .outerjoin(User, User.id == Cancellation.actor_id)
             .where(Order.store_id == store.id, Cancellation.created_at >= since,
                    Cancellation.created_at < until)
             .order_by(Cancellation.created_at, Cancellation.id, CancellationItem.id)
             .execution_options(yield_per=STREAM_BATCH))
    for cancellation, line, order, item, product, actor in db.session.execute(query):
        local = cancellation.created_at.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
        yield [
            store.name, store.licence_number, day.isoformat(), local.isoformat(),
            isoformat(cancellation.created_at), order.number, isoformat(order.placed_at),
            cancellation.id, cancellation.kind, cancellation.previous_status, product.sku,
            product.name, line.quantity, _amount(item.unit_price_cents),
            _amount(item.unit_price_cents * line.quantity), _amount(order.total_cents),
            _amount(cancellation.refund_cents), cancellation.reason,
            label_for(cancellation.reason),
            actor.email if actor else cancellation.source, actor.role if actor else "",
            cancellation.source, "yes" if line.stock_returned else "no",
            isoformat(cancellation.reinstated_at) or "",
        ]


def _amount(cents):
    """Money as a number cell ("12.50"), not as text a formula check would quote."""
    return Decimal(money(cents))


# --- audit log -------------------------------------------------------------------------------

@dataclass
class AuditFilters:
    actor: str | None = None
    action: str | None = None
    store_id: int | None = None
    order: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    page: int = 1

    @classmethod
    def from_args(cls, args, visible_store_ids):
        """Whatever cannot be parsed or is not allowed is ignored, so a bookmark never errors."""
        store_id = query_int(args.get("store"))
        if visible_store_ids is not None and store_id not in visible_store_ids:
            store_id = None
        order = query_text(args.get("order"), 64)
        if order and order.isascii() and order.isdigit() and query_int(order) is None:
            raise ValidationFailed(
                f"No order has the id {order[:24]}: search by an order's number (DT-…) or id.",
                details={"fields": [{"field": "order", "message": "is past any order id"}]})
        return cls(actor=query_text(args.get("actor"), 254),
                   action=query_text(args.get("action"), 64),
                   store_id=store_id, order=order,
                   date_from=query_date(args.get("from"), "from"),
                   date_to=query_date(args.get("to"), "to"),
                   page=max(query_int(args.get("page"), 1_000_000) or 1, 1))

    @property
    def active(self):
        return any((self.actor, self.action, self.store_id, self.order, self.date_from,
                    self.date_to))

    def as_args(self, **changes):
        args = {"actor": self.actor, "action": self.action, "store": self.store_id,
                "order": self.order,
                "from": self.date_from.isoformat() if self.date_from else None,
                "to": self.date_to.isoformat() if self.date_to else None,
                "page": self.page if self.page > 1 else None}
        args.update(changes)
        return {k: v for k, v in args.items() if v not in (None, "")}


def audit_query(user, filters):
    """select(AuditEvent) with the filters and the user's store scope (managers: their stores)."""
    query = select(AuditEvent)
    scope = store_scope(user)
    if scope is not None:
        query = query.where(AuditEvent.store_id.in_(scope))
    if filters.store_id is not None:
        query = query.where(AuditEvent.store_id == filters.store_id)
    if filters.action:
        if filters.action.endswith(".*"):
            query = query.where(AuditEvent.action.startswith(filters.action[:-1],
                                                             autoescape=True))
        else:
            query = query.where(AuditEvent.action == filters.action)
    if filters.actor:
        actor = filters.actor.lower()
        query = query.where(func.lower(AuditEvent.actor_label).contains(actor, autoescape=True))
    if filters.order:
        order_ids = db.session.scalars(select(Order.id).where(
            func.upper(Order.number) == filters.order.upper())).all()
        order_id = query_int(filters.order)
        if order_id is not None:  # the order's id, when it can be one
            order_ids.append(order_id)
        query = query.where(AuditEvent.order_id.in_(order_ids or [-1]))
    if filters.date_from:
        query = query.where(AuditEvent.created_at >= datetime.combine(filters.date_from, time.min))
    until = first_moment_after(filters.date_to) if filters.date_to else None
    if until:
        query = query.where(AuditEvent.created_at < until)
    return query


def audit_actions(user):
    """The action names present (for the filter's dropdown): one DISTINCT over an indexed column."""
    query = select(AuditEvent.action).distinct().order_by(AuditEvent.action)
    scope = store_scope(user)
    if scope is not None:
        query = query.where(AuditEvent.store_id.in_(scope))
    return db.session.scalars(query).all()


AUDIT_CSV_HEADER = ["seq", "created_at_utc", "actor", "action", "target_type", "target_id",
                    "store_id", "order_id", "before", "after", "request_id", "ip", "prev_hash",
                    "hash"]


def audit_rows(user, filters, see_contact):
    """The filtered events as CSV rows, oldest first, read in batches (never all at once)."""
    query = audit_query(user, filters).order_by(AuditEvent.seq) \
        .execution_options(yield_per=STREAM_BATCH)
    for event in db.session.scalars(query):
        yield [event.seq, isoformat(event.created_at), event.actor_label, event.action,
               event.target_type, event.target_id, event.store_id, event.order_id,
               _json(redact(event.before, see_contact)), _json(redact(event.after, see_contact)),
               event.request_id, event.ip, event.prev_hash, event.hash]


def _json(value):
    return "" if value is None else json.dumps(value, sort_keys=True, default=str)


# --- CSV streaming ---------------------------------------------------------------------------

# A spreadsheet reads a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    """Spreadsheet-safe: every text cell that starts like a formula is prefixed with a quote —
    "-1+cmd|..." as much as "=HYPERLINK(...)"; text is never guessed to be a number. Amounts
    and ids are passed as numbers (int, Decimal) and written as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_stream(header, rows, chunk_rows=CSV_CHUNK_ROWS):
    """CSV text in chunks of `chunk_rows` rows: memory stays flat however long the export."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([_cell(value) for value in row])
        count += 1
        if count % chunk_rows == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


__all__ = [
    "Period", "cancellation_stats", "pending_approvals_count", "manual_handling",
    "after_cancellations", "check_abuse", "abuse_flags", "acknowledge_flag", "compliance_rows",
    "compliance_store", "COMPLIANCE_HEADER", "AuditFilters", "audit_query", "audit_actions",
    "audit_rows", "AUDIT_CSV_HEADER", "csv_stream",
]
