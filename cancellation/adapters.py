"""The two external parties: a payment gateway for refunds, a channel for customer messages.

Production replaces these classes (configured by PAYMENT_GATEWAY / NOTIFIER); the shipped ones
are a simulated gateway and an e-mail adapter writing to a mailbox the panel shows. Both honour an
idempotency key, as real gateways do, and both can be made to fail on demand (`flask simulate`),
so the failure paths can be tried by hand and are tested.

They commit in their own connection: the far side of a network call does not roll back with us.
"""
import secrets

from flask import current_app
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from models import MailMessage, SimulatedPayout, db

FAIL_KEY = "cancel-desk:simulate:fail:{kind}"


class DeliveryError(Exception):
    """The external party refused or could not be reached; the caller retries."""


def _redis():
    return current_app.extensions["redis"]


def set_failures(kind, times):
    """Make the next `times` calls of `kind` ('refund' or 'notification') fail; -1: always."""
    _redis().set(FAIL_KEY.format(kind=kind), int(times))


def failures_left(kind):
    return int(_redis().get(FAIL_KEY.format(kind=kind)) or 0)


def _consume_failure(kind):
    key = FAIL_KEY.format(kind=kind)
    left = int(_redis().get(key) or 0)
    if left < 0:
        return True
    if left > 0 and _redis().decr(key) >= 0:
        return True
    return False


def _insert_once(model, values):
    """Insert a row unique by idempotency_key; on a repeat return the row already there. One
    short transaction of its own (one statement unless it is a repeat)."""
    with db.engine.begin() as connection:
        insert_ = _INSERTS.get(connection.dialect.name)
        if insert_ is not None:
            row = connection.execute(
                insert_(model).values(**values)
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(*model.__table__.c)).first()
            if row is not None:
                return row
        else:
            try:
                with connection.begin_nested():
                    connection.execute(insert(model).values(**values))
            except IntegrityError:
                pass
        return connection.execute(
            select(model).where(model.idempotency_key == values["idempotency_key"])).one()


_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class SimulatedGateway:
    """Pays refunds into a ledger table; the same key never pays twice."""

    def refund(self, *, idempotency_key, amount_cents, order_number, method=None):
        if _consume_failure("refund"):
            raise DeliveryError("simulated gateway: refund declined (failure injected)")
        row = _insert_once(SimulatedPayout, {
            "idempotency_key": idempotency_key, "amount_cents": amount_cents,
            "reference": "sim_re_" + secrets.token_hex(8)})
        return row.reference


class EmailOutboxNotifier:
    """Writes each message once to the mailbox table (what an SMTP relay would receive)."""

    def send(self, *, idempotency_key, recipient, subject, body):
        if not recipient:
            raise DeliveryError("no e-mail address on file for this customer")
        if _consume_failure("notification"):
            raise DeliveryError("simulated mail relay unavailable (failure injected)")
        _insert_once(MailMessage, {"idempotency_key": idempotency_key, "recipient": recipient,
                                   "subject": subject, "body": body})


def payment_gateway():
    return current_app.extensions.get("payment_gateway") or SimulatedGateway()


def notifier():
    return current_app.extensions.get("notifier") or EmailOutboxNotifier()
