"""The payment processor over HTTP: refunds (and re-charges) to card or debit, signed and
idempotent by key, with the one rule that matters when the network fails — an outcome we do not
know is looked up, never paid again.

The processor's contract (what the sandbox in `sandbox_processor/` implements): POST
/v1/refunds or /v1/charges with an `Idempotency-Key`, the same key and body answer the same
payout, GET /v1/<kind>/<key> finds it; every call signed with HMAC-SHA256 of
"{timestamp}.{METHOD}.{path}.{body}" under the shared key.
"""
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import NameResolutionError, NewConnectionError

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The external party refused or could not be reached; the caller retries.

    (Defined here, at the bottom, and re-exported by `cancellation.adapters`, so that this module
    needs nothing of the adapters that use it.)"""


class Declined(DeliveryError):
    """The processor answered and refused (402): the card issuer declined."""


class OutcomeUnknown(DeliveryError):
    """The request went out and no answer came back, and the processor has no record of the key
    yet: it may still be paying. The next attempt looks the key up before sending anything."""


def signature(key, timestamp, method, path, body):
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


class ProcessorClient:
    """One processor account: its URL, its key, its timeouts; one HTTP session per process."""

    def __init__(self, url, key, connect_timeout=2.0, read_timeout=5.0):
        if not url or not key:
            raise RuntimeError("PAYMENT_PROCESSOR_URL and PAYMENT_PROCESSOR_KEY must be set: "
                               "refunds go to the payment processor (`make run` and the tests "
                               "start a sandbox processor and set both)")
        self.url, self._key = url.rstrip("/"), key
        self.base_path = urlsplit(self.url).path
        self.timeout = (connect_timeout, read_timeout)
        self._session, self._pid, self._lock = None, None, threading.Lock()

    @classmethod
    def from_config(cls, config):
        return cls(config.get("PAYMENT_PROCESSOR_URL"), config.get("PAYMENT_PROCESSOR_KEY"),
                   connect_timeout=config.get("PAYMENT_PROCESSOR_CONNECT_TIMEOUT", 2.0),
                   read_timeout=config.get("PAYMENT_PROCESSOR_TIMEOUT", 5.0))

    def __repr__(self):  # never the key
        return f"ProcessorClient({self.url!r})"

    def refund(self, *, idempotency_key, amount_cents, order_number, tender,
               payment_reference=None, attempt=1):
        """Pay a refund back to the card or debit account; the processor's refund id."""
        return self._pay("refunds", idempotency_key, amount_cents, order_number, tender,
                         payment_reference, attempt)

    def charge(self, *, idempotency_key, amount_cents, order_number, tender,
               payment_reference=None, attempt=1):
        """Charge the customer again (a reinstatement); the processor's charge id."""
        return self._pay("charges", idempotency_key, amount_cents, order_number, tender,
                         payment_reference, attempt)

    # -- the rules ----------------------------------------------------------------------------

    def _pay(self, kind, key, amount_cents, order_number, tender, payment_reference, attempt):
        what = kind[:-1]
        if attempt > 1:
            # An earlier attempt may have paid without our hearing it: ask before sending.
            found = self._lookup(kind, key, what)
            if found is not None:
                log.info("%s %s: already paid by an earlier attempt (%s)", what, key, found)
                return found
        body = json.dumps({"amount_cents": amount_cents, "currency": "USD", "tender": tender,
                           "payment_reference": payment_reference,
                           "order_number": order_number}, separators=(",", ":")).encode()
        try:
            response = self._send("POST", f"/v1/{kind}", body, {"Idempotency-Key": key})
        except requests.ConnectTimeout as exc:
            raise DeliveryError(f"payment processor not reached; nothing was sent ({exc})") \
                from exc
        except requests.ReadTimeout as exc:
            return self._after_lost_answer(kind, key, what, "no answer in time", exc)
        except requests.ConnectionError as exc:
            if _never_sent(exc):
                raise DeliveryError(f"payment processor not reached; nothing was sent "
                                    f"({exc})") from exc
            return self._after_lost_answer(kind, key, what, "connection lost", exc)
        except requests.RequestException as exc:
            raise DeliveryError(f"payment processor {what} failed: {exc}") from exc
        if response.status_code in (200, 201):
            paid = _json(response).get("id")
            if not paid:
                raise OutcomeUnknown(f"payment processor answered {response.status_code} to the "
                                     f"{what} without an id; it will be looked up before any "
                                     "retry")
            return paid
        error = _json(response)
        message = error.get("message") or error.get("error") or response.reason
        if response.status_code == 402:
            raise Declined(f"{what} declined by the payment processor: {message}")
        if response.status_code == 422 and error.get("error") == "idempotency_key_reused":
            raise DeliveryError(f"{what} {key}: the processor holds another request under this "
                                "idempotency key (amount, tender or order differ); not paid "
                                "again, check it by hand")
        if response.status_code == 401:
            raise DeliveryError("payment processor refused our signature (401): check "
                                "PAYMENT_PROCESSOR_KEY")
        raise DeliveryError(f"payment processor answered {response.status_code} to the {what}: "
                            f"{message}")

    def _after_lost_answer(self, kind, key, what, why, cause):
        """The request was sent and its answer lost: look the key up once, never POST again."""
        log.warning("%s %s: %s from the payment processor; looking the key up", what, key, why)
        try:
            found = self._lookup(kind, key, what)
        except DeliveryError as exc:
            raise OutcomeUnknown(f"{what} outcome unknown ({why}, and the lookup failed: {exc}); "
                                 "it will be looked up before any retry") from cause
        if found is None:
            raise OutcomeUnknown(f"{what} outcome unknown ({why}; the processor has no record "
                                 "of it yet); it will be looked up before any retry") from cause
        return found

    def _lookup(self, kind, key, what):
        """The id paid under `key`, or None when the processor has none; DeliveryError when it
        cannot tell."""
        try:
            response = self._send("GET", f"/v1/{kind}/{quote(key, safe='')}", b"", {})
        except requests.RequestException as exc:
            raise DeliveryError(f"payment processor lookup of {what} {key} failed: {exc}") \
                from exc
        if response.status_code == 200 and _json(response).get("id"):
            return _json(response)["id"]
        if response.status_code == 404:
            return None
        raise DeliveryError(f"payment processor lookup of {what} {key} answered "
                            f"{response.status_code}")

    # -- the wire -----------------------------------------------------------------------------

    def _send(self, method, path, body, headers):
        timestamp = str(int(time.time()))
        signed = signature(self._key, timestamp, method, self.base_path + path, body)
        headers = {**headers, "X-Processor-Timestamp": timestamp,
                   "X-Processor-Signature": f"v1={signed}", "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        return self._http().request(method, self.url + path, data=body or None,
                                    headers=headers, timeout=self.timeout,
                                    allow_redirects=False)

    def _http(self):
        # One pooled session per process: a session made before a fork (the Celery worker's
        # parent) must not share its sockets with the children.
        with self._lock:
            if self._session is None or self._pid != os.getpid():
                self._session, self._pid = requests.Session(), os.getpid()
            return self._session


def _never_sent(exc):
    """Whether a ConnectionError happened before the request left (refused, unresolvable):
    anything else — a reset, a dropped keep-alive — may have come after the processor read it."""
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, (NewConnectionError, NameResolutionError))


def _json(response):
    try:
        value = response.json()
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}
