"""orders list and search at a million orders: composite indexes in the list's order, trigram
indexes for the search (PostgreSQL)

Revision ID: a7c3e91f0d52
Revises: 5e1a7c2d9b40
Create Date: 2026-12-02 10:10:00.000000

The list (cancellation.orders) filters by store, store + status or status and orders by
placed_at, id: each has a b-tree in that order (the single-column store and status indexes are
their prefixes, so they go); it counts from (store_id, status), small once deduplicated. The
search's ILIKE '%term%' on the order number and the customer's name and e-mail, and LIKE on the
phone's digits (a generated column, customers.phone_digits), are served by pg_trgm GIN indexes; on SQLite, which has no such index, the same
names are plain b-trees, so the models describe one schema on both.
"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'a7c3e91f0d52'
down_revision = '5e1a7c2d9b40'
branch_labels = None
depends_on = None

TRIGRAM = (("ix_orders_number_trgm", "orders", "number"),
           ("ix_customers_name_trgm", "customers", "name"),
           ("ix_customers_email_trgm", "customers", "email"),
           ("ix_customers_phone_digits_trgm", "customers", "phone_digits"))
# customers.phone_digits, generated: models.customer.digits_of as each dialect compiles it.
PHONE_DIGITS = "regexp_replace(phone, '[^0-9]+', '', 'g')"
PHONE_DIGITS_SQLITE = "phone"
for _separator in (" ", "-", "(", ")", "+", ".", "/"):
    PHONE_DIGITS_SQLITE = f"replace({PHONE_DIGITS_SQLITE}, '{_separator}', '')"


def upgrade():
    postgresql = op.get_bind().dialect.name == "postgresql"
    # STORED on PostgreSQL (it has no other kind); VIRTUAL on SQLite, which cannot add a stored
    # column to a table that exists.
    op.add_column("customers", sa.Column("phone_digits", sa.String(length=32), sa.Computed(
        PHONE_DIGITS if postgresql else PHONE_DIGITS_SQLITE, persisted=True if postgresql else None),
        nullable=True))
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_store_status_placed")
        batch_op.drop_index("ix_orders_store_id")
        batch_op.drop_index("ix_orders_status")
        batch_op.create_index("ix_orders_store_status_placed",
                              ["store_id", "status", "placed_at", "id"], unique=False)
        batch_op.create_index("ix_orders_store_placed", ["store_id", "placed_at", "id"],
                              unique=False)
        batch_op.create_index("ix_orders_status_placed", ["status", "placed_at", "id"],
                              unique=False)
        batch_op.create_index("ix_orders_store_status", ["store_id", "status"], unique=False)
    if postgresql:
        # Trusted since PostgreSQL 13: the database's owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, table, column in TRIGRAM:
            op.create_index(name, table, [column], unique=False, postgresql_using="gin",
                            postgresql_ops={column: "gin_trgm_ops"})
    else:
        for name, table, column in TRIGRAM:
            op.create_index(name, table, [column], unique=False)


def downgrade():
    for name, table, _column in reversed(TRIGRAM):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("phone_digits")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_store_status")
        batch_op.drop_index("ix_orders_status_placed")
        batch_op.drop_index("ix_orders_store_placed")
        batch_op.drop_index("ix_orders_store_status_placed")
        batch_op.create_index("ix_orders_status", ["status"], unique=False)
        batch_op.create_index("ix_orders_store_id", ["store_id"], unique=False)
        batch_op.create_index("ix_orders_store_status_placed", ["store_id", "status", "placed_at"],
                              unique=False)
