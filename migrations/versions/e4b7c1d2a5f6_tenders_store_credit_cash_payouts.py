"""tenders: payments per order, refunds per payment, store credit, cash payouts, balance due

Revision ID: e4b7c1d2a5f6
Revises: c5d2e8f4a913
Create Date: 2026-12-02 12:40:00.000000

An order is paid by payments in tenders (cash, debit, card, store credit); a cancellation refunds
back to the payments that paid (cancellation/plan.py). Cash refunds wait at the counter
(`awaiting_payout`) until staff pay them out from a drawer; store credit is a customer ledger; a
reinstated order whose refund had gone out owes it again (`balance_due_cents`).

Backfill: every paid order gets one payment in its `payment_method` (card when it has none) for
what it was paid, with what was refunded of it; each refund points at that payment. The
simulated gateway's payout table goes: refunds are paid by the payment processor over HTTP (the
sandbox processor keeps its own ledger).
"""
import sqlalchemy as sa
from alembic import op

revision = "e4b7c1d2a5f6"
down_revision = "c5d2e8f4a913"
branch_labels = None
depends_on = None

TENDERS = ("cash", "debit", "card", "store_credit")


def _add_reference(table, column, referred, index=False):
    """A nullable foreign key column: plain ALTER TABLE on both databases (SQLite takes the
    REFERENCES clause in ADD COLUMN; a batch copy of the table would trip over the rows that
    reference it)."""
    name = f"fk_{table}_{column}_{referred}"
    if op.get_bind().dialect.name == "sqlite":  # alembic would ALTER a constraint in
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER "
                   f"CONSTRAINT {name} REFERENCES {referred} (id)")
    else:
        op.add_column(table, sa.Column(column, sa.Integer(), nullable=True))
        op.create_foreign_key(name, table, referred, [column], ["id"])
    if index:
        op.create_index(f"ix_{table}_{column}", table, [column])


def upgrade():
    op.create_table(
        "payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("tender", sa.String(length=16), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("refunded_cents", sa.Integer(), server_default="0", nullable=False),
        sa.Column("processor_reference", sa.String(length=64), nullable=True),
        sa.Column("taken_by_id", sa.Integer(), nullable=True),
        sa.Column("drawer", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name="fk_payments_order_id_orders",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["taken_by_id"], ["users.id"],
                                name="fk_payments_taken_by_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
    )
    op.create_index("ix_payments_order_id", "payments", ["order_id"])
    op.create_table(
        "store_credit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("cancellation_id", sa.Integer(), nullable=True),
        sa.Column("refund_id", sa.Integer(), nullable=True),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name="fk_store_credit_entries_customer_id_customers"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"],
                                name="fk_store_credit_entries_order_id_orders"),
        sa.ForeignKeyConstraint(["cancellation_id"], ["cancellations.id"],
                                name="fk_store_credit_entries_cancellation_id_cancellations"),
        sa.ForeignKeyConstraint(["refund_id"], ["refunds.id"],
                                name="fk_store_credit_entries_refund_id_refunds"),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"],
                                name="fk_store_credit_entries_actor_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_store_credit_entries"),
    )
    op.create_index("ix_store_credit_entries_customer_id", "store_credit_entries",
                    ["customer_id"])
    op.create_index("ix_store_credit_entries_order_id", "store_credit_entries", ["order_id"])

    op.add_column("orders", sa.Column("balance_due_cents", sa.Integer(), nullable=False,
                                      server_default="0"))
    op.add_column("customers", sa.Column("store_credit_cents", sa.Integer(), nullable=False,
                                         server_default="0"))
    op.add_column("cancellations", sa.Column("refund_to", sa.String(length=16), nullable=False,
                                             server_default="original"))
    op.add_column("cancellations", sa.Column("refund_to_reason", sa.Text(), nullable=True))
    op.add_column("cancellations", sa.Column("balance_cleared_cents", sa.Integer(),
                                             nullable=False, server_default="0"))
    _add_reference("refunds", "payment_id", "payments", index=True)
    _add_reference("refunds", "paid_out_by_id", "users")
    op.add_column("refunds", sa.Column("drawer", sa.String(length=40), nullable=True))
    op.add_column("refunds", sa.Column("outcome_unknown", sa.Boolean(), nullable=False,
                                       server_default=sa.false()))

    # Backfill: one payment per paid order, in its method, for what it was paid and refunded.
    bind = op.get_bind()
    orders = sa.table("orders", sa.column("id"), sa.column("paid_cents"),
                      sa.column("refunded_cents"), sa.column("payment_method"),
                      sa.column("placed_at"))
    payments = sa.table("payments", sa.column("order_id"), sa.column("tender"),
                        sa.column("amount_cents"), sa.column("refunded_cents"),
                        sa.column("created_at"), sa.column("id"))
    tender = sa.case(*((orders.c.payment_method == t, t) for t in TENDERS), else_="card")
    bind.execute(payments.insert().from_select(
        ["order_id", "tender", "amount_cents", "refunded_cents", "created_at"],
        sa.select(orders.c.id, tender, orders.c.paid_cents,
                  sa.func.least(orders.c.refunded_cents, orders.c.paid_cents)
                  if bind.dialect.name == "postgresql"
                  else sa.func.min(orders.c.refunded_cents, orders.c.paid_cents),
                  orders.c.placed_at)
        .where(orders.c.paid_cents > 0)))
    refunds = sa.table("refunds", sa.column("order_id"), sa.column("payment_id"))
    bind.execute(refunds.update().values(payment_id=sa.select(payments.c.id).where(
        payments.c.order_id == refunds.c.order_id).scalar_subquery()))

    op.drop_table("simulated_payouts")


def downgrade():
    op.create_table(
        "simulated_payouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_simulated_payouts"),
        sa.UniqueConstraint("idempotency_key", name="uq_simulated_payouts_idempotency_key"),
    )
    op.drop_column("refunds", "outcome_unknown")
    op.drop_column("refunds", "drawer")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_refunds_paid_out_by_id_users", "refunds", type_="foreignkey")
        op.drop_constraint("fk_refunds_payment_id_payments", "refunds", type_="foreignkey")
    op.drop_column("refunds", "paid_out_by_id")
    op.drop_index("ix_refunds_payment_id", "refunds")
    op.drop_column("refunds", "payment_id")
    op.drop_column("cancellations", "balance_cleared_cents")
    op.drop_column("cancellations", "refund_to_reason")
    op.drop_column("cancellations", "refund_to")
    op.drop_column("customers", "store_credit_cents")
    op.drop_column("orders", "balance_due_cents")
    op.drop_table("store_credit_entries")
    op.drop_table("payments")
