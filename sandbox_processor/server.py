"""The sandbox processor's HTTP API: signed refunds and charges, idempotent by key, and the
control endpoints that make it decline, fail or hang on purpose.

A stand-in for a card processor, run as its own process (`python -m sandbox_processor`), so the
app's adapter is tried over a real socket: its timeouts, its retries and its signatures.
"""
import hashlib
import hmac
import logging
import time

from flask import Flask, jsonify, request

from sandbox_processor.ledger import MODES, KeyReused, Ledger, request_hash

# A signed request older or newer than this is refused (a replayed capture, a wrong clock).
MAX_SKEW_SECONDS = 300
MAX_KEY_LENGTH = 80
TENDERS = ("card", "debit")
FIELDS = {"amount_cents", "currency", "tender", "payment_reference", "order_number"}

log = logging.getLogger("sandbox_processor")


def signature(key, timestamp, method, path, body):
    """v1: hex HMAC-SHA256 of "{timestamp}.{METHOD}.{path}.{raw body}" under the shared key."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def create_app(ledger_path, key):
    app = Flask("sandbox_processor")
    ledger = Ledger(ledger_path)

    def error(status, code, message=None):
        body = {"error": code}
        if message:
            body["message"] = message
        return jsonify(body), status

    def signed():
        """Whether the request carries a valid v1 signature of a recent timestamp."""
        timestamp = request.headers.get("X-Processor-Timestamp", "")
        given = request.headers.get("X-Processor-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_SECONDS:
            return False
        # The path as it came on the wire (percent-encoding kept), which is what was signed.
        path = request.environ.get("RAW_URI", request.path).split("?", 1)[0]
        expected = "v1=" + signature(key, timestamp, request.method, path, request.get_data())
        return hmac.compare_digest(given.encode(), expected.encode())

    def controlled():
        return hmac.compare_digest(request.headers.get("X-Sandbox-Key", "").encode(), key.encode())

    def public(row):
        return {"id": row["id"], "status": "succeeded", "amount_cents": row["amount_cents"],
                "currency": row["currency"], "tender": row["tender"],
                "idempotency_key": row["idempotency_key"], "created_at": row["created_at"]}

    def parse():
        """(the request's fields, None) or (None, what is wrong with it)."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return None, "the body must be a JSON object"
        unknown = set(body) - FIELDS
        if unknown:
            return None, f"unknown fields: {', '.join(sorted(unknown))}"
        amount = body.get("amount_cents")
        if type(amount) is not int or amount <= 0:
            return None, "amount_cents must be a positive integer"
        if body.get("currency") != "USD":
            return None, "currency must be USD"
        if body.get("tender") not in TENDERS:
            return None, "tender must be card or debit"
        reference = body.get("payment_reference")
        if reference is not None and not isinstance(reference, str):
            return None, "payment_reference must be a string or null"
        number = body.get("order_number")
        if not isinstance(number, str) or not number.strip():
            return None, "order_number must be a non-empty string"
        return {"amount_cents": amount, "currency": "USD", "tender": body["tender"],
                "payment_reference": reference, "order_number": number}, None

    def pay(kind):
        if not signed():
            return error(401, "invalid_signature")
        key_ = request.headers.get("Idempotency-Key", "")
        if not key_ or len(key_) > MAX_KEY_LENGTH:
            return error(400, "invalid_request",
                         f"Idempotency-Key is required, at most {MAX_KEY_LENGTH} characters")
        fields, problem = parse()
        if problem:
            return error(400, "invalid_request", problem)
        mode, delay = ledger.take_behaviour()
        if mode == "decline":
            return error(402, "declined", "Card issuer declined the refund")
        if mode == "error":
            return error(503, "processor_unavailable", "Sandbox processor error (injected)")
        if mode == "timeout_before_commit":
            time.sleep(delay)
            return error(503, "processor_unavailable", "Sandbox processor timed out (injected)")
        if mode == "slow":
            time.sleep(delay)
        try:
            row, created = ledger.pay(kind, key_, fields, request_hash(fields))
        except KeyReused:
            return error(422, "idempotency_key_reused",
                         "this Idempotency-Key was used with another request")
        if mode == "timeout_after_commit":
            time.sleep(delay)  # paid; the answer comes after the client gave up on it
        log.info("%s %s %s (%s)", kind, row["id"], "paid" if created else "replayed",
                 row["idempotency_key"])
        return jsonify(public(row)), 201 if created else 200

    def lookup(kind, key_):
        if not signed():
            return error(401, "invalid_signature")
        row = ledger.find(kind, key_)
        return (jsonify(public(row)), 200) if row else error(404, "not_found")

    @app.post("/v1/refunds")
    def create_refund():
        return pay("refunds")

    @app.get("/v1/refunds/<path:key_>")
    def get_refund(key_):
        return lookup("refunds", key_)

    @app.post("/v1/charges")
    def create_charge():
        return pay("charges")

    @app.get("/v1/charges/<path:key_>")
    def get_charge(key_):
        return lookup("charges", key_)

    @app.route("/_sandbox/behaviour", methods=["GET", "POST", "DELETE"])
    def behaviour():
        if not controlled():
            return error(401, "invalid_sandbox_key")
        if request.method == "POST":
            body = request.get_json(silent=True) or {}
            mode, times, delay = body.get("mode"), body.get("times", 1), body.get("delay_s", 3)
            if mode not in MODES or type(times) is not int or times < -1 \
                    or not isinstance(delay, (int, float)) or delay < 0:
                return error(400, "invalid_request",
                             f"mode one of {', '.join(MODES)}; times an integer >= -1; "
                             "delay_s a number >= 0")
            ledger.set_behaviour(mode, times, float(delay))
        elif request.method == "DELETE":
            ledger.set_behaviour("normal", 0, 3.0)
        return jsonify(ledger.behaviour())

    @app.get("/_sandbox/ledger")
    def show_ledger():
        if not controlled():
            return error(401, "invalid_sandbox_key")
        key_ = request.args.get("idempotency_key") or None
        prefix = request.args.get("prefix") or None
        return jsonify({kind: ledger.rows(kind, key_, prefix) for kind in ("refunds", "charges")})

    @app.get("/_sandbox/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
