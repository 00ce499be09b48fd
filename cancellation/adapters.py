"""The two external parties: a payment processor for refunds, a channel for customer messages.

Refunds go over HTTP to a payment processor (`cancellation/processor.py`, configured by
PAYMENT_PROCESSOR_URL / _KEY); `make run`, the tests and the bench start a sandbox processor
(`sandbox_processor/`) as a process of its own. Messages go to an e-mail adapter writing to a
mailbox the panel shows. Both honour an idempotency key, and both can be made to fail on demand
(`flask simulate`): the mail relay here, the processor at the sandbox's control endpoint.

The mailbox commits in its own connection: the far side of a network call does not roll back
with us.
"""
from flask import current_app
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from cancellation.processor import Declined, DeliveryError, OutcomeUnknown, ProcessorClient
from models import MailMessage, db
from sandbox_processor.control import SandboxControl

__all__ = ["Declined", "DeliveryError", "OutcomeUnknown", "EmailOutboxNotifier",
           "ProcessorClient", "failures_left", "notifier", "payment_gateway", "set_failures"]

FAIL_KEY = "cancel-desk:simulate:fail:{kind}"


def _redis():
    return current_app.extensions["redis"]


def set_failures(kind, times):
    """Make the next `times` calls of `kind` ('refund' or 'notification') fail; -1: always.
    Refunds are declined by the sandbox processor (its control endpoint), notices here."""
    if kind == "refund":
        if times:
            _sandbox().set("decline", times=int(times))
        else:
            _sandbox().reset()
        return
    _redis().set(FAIL_KEY.format(kind=kind), int(times))


def failures_left(kind):
    if kind == "refund":
        behaviour = _sandbox().behaviour()
        return behaviour["times"] if behaviour["mode"] == "decline" else 0
    return int(_redis().get(FAIL_KEY.format(kind=kind)) or 0)


def _sandbox():
    config = current_app.config
    if not config.get("PAYMENT_PROCESSOR_URL"):
        raise RuntimeError("PAYMENT_PROCESSOR_URL is not set: no sandbox processor to drive")
    return SandboxControl(config["PAYMENT_PROCESSOR_URL"], config["PAYMENT_PROCESSOR_KEY"])


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
    """The app's processor client, made once per app (its HTTP session pools connections)."""
    gateway = current_app.extensions.get("payment_gateway")
    if gateway is None:
        if not current_app.config.get("PAYMENT_PROCESSOR_URL"):
            raise RuntimeError("PAYMENT_PROCESSOR_URL is not set: refunds go to a payment "
                               "processor over HTTP (`make run` starts a sandbox one)")
        gateway = current_app.extensions.setdefault(
            "payment_gateway", ProcessorClient.from_config(current_app.config))
    return gateway


def notifier():
    return current_app.extensions.get("notifier") or EmailOutboxNotifier()
