"""cancellations record the value they cancelled (subtotal, tax, discount, total); a cancelled
order's totals are what it was placed for

Revision ID: c5d2e8f4a913
Revises: a7c3e91f0d52
Create Date: 2026-12-02 10:55:00.000000

One arithmetic for every cancellation (cancellation/plan.py): a partial cancellation takes its
share off the order's totals, and the one that leaves nothing open — a full cancel, or the last
items — puts the totals back to what the order was placed for. Each cancellation keeps the value
it cancelled, so that the placed totals are the current ones plus what earlier cancellations
took, and a reinstatement can take it off again.

Backfill: a partial cancellation's value is the difference between its audit event's before and
after; a full one's, the order's totals (a full cancel used to leave them as they were). A
cancelled order's totals become the sum of its cancellations' values (the placed totals): before,
an order whose last items were cancelled showed zeros.
"""
import json
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "c5d2e8f4a913"
down_revision = "a7c3e91f0d52"
branch_labels = None
depends_on = None

COLUMNS = ("subtotal_cents", "tax_cents", "discount_cents", "total_cents")
SNAPSHOT = {"subtotal_cents": "subtotal", "tax_cents": "tax", "discount_cents": "discount",
            "total_cents": "total"}


def _cents(value):
    return int(Decimal(str(value)) * 100) if value not in (None, "") else None


def _json(value):
    return json.loads(value) if isinstance(value, str) else (value or {})


def upgrade():
    # Plain ALTER TABLE on both databases (SQLite has had ADD / DROP COLUMN since 3.35): a
    # batch copy of the table would trip over the rows that reference it.
    for column in COLUMNS:
        op.add_column("cancellations",
                      sa.Column(column, sa.Integer(), nullable=False, server_default="0"))

    bind = op.get_bind()
    cancellations = sa.table("cancellations", sa.column("id"), sa.column("order_id"),
                             sa.column("kind"), sa.column("reinstated_at"),
                             *(sa.column(c) for c in COLUMNS))
    orders = sa.table("orders", sa.column("id"), sa.column("status"),
                      *(sa.column(c) for c in COLUMNS))
    events = sa.table("audit_events", sa.column("action"), sa.column("before"),
                      sa.column("after"))
    values = {}
    for before, after in bind.execute(sa.select(events.c.before, events.c.after).where(
            events.c.action == "order.partially_cancelled")):
        before, after = _json(before), _json(after)
        if not after.get("cancellation_id"):
            continue
        taken = {}
        for column, key in SNAPSHOT.items():
            was, now = _cents(before.get(key)), _cents(after.get(key))
            taken[column] = (was - now) if was is not None and now is not None else 0
        values[int(after["cancellation_id"])] = taken
    full = bind.execute(sa.select(cancellations.c.id, *(orders.c[c] for c in COLUMNS))
                        .join(orders, orders.c.id == cancellations.c.order_id)
                        .where(cancellations.c.kind == "full")).all()
    for row in full:
        values[row[0]] = dict(zip(COLUMNS, row[1:], strict=True))
    for cancellation_id, taken in values.items():
        bind.execute(cancellations.update().where(cancellations.c.id == cancellation_id)
                     .values(**taken))

    # A cancelled order's totals: what it was placed for, the sum of what was cancelled.
    sums = bind.execute(
        sa.select(cancellations.c.order_id,
                  *(sa.func.sum(cancellations.c[c]) for c in COLUMNS))
        .join(orders, orders.c.id == cancellations.c.order_id)
        .where(orders.c.status == "cancelled", cancellations.c.reinstated_at.is_(None))
        .group_by(cancellations.c.order_id)).all()
    for row in sums:
        bind.execute(orders.update().where(orders.c.id == row[0])
                     .values(**{c: int(v or 0) for c, v in zip(COLUMNS, row[1:], strict=True)}))


def downgrade():
    for column in COLUMNS:
        op.drop_column("cancellations", column)
