"""Property-based fuzzing of the whole JSON API from its own OpenAPI document (schemathesis 4).

A real HTTP server (werkzeug, threaded) serves the test app while the real Celery worker runs.
Schemathesis loads /api/openapi.json from it and, for every operation, sends generated requests —
valid ones (positive) and ones the document forbids (negative) — with an admin's bearer token and
a fresh X-Idempotency-Key on every POST. Each answer must be no server error, have a documented
status code and content type, and match the documented schema; what the document allows must
pass the server's own checks of bodies and query strings (positive), and what it forbids must
be refused (negative).

Bounded: a fixed number of examples per operation, derandomized (the same cases every run), no
deadline. Path ids are steered to a handful of seeded orders most of the time, so the cases reach
real orders (preview, cancel, reinstate, post-checks) rather than only 404s.

Each operation runs as a hypothesis test over `APIOperation.as_strategy()` inside a pytest subtest
(schemathesis' own lazy `from_fixture(...).parametrize()` needs `Item._nodeid`, which pytest 9
no longer has).
"""
import uuid

import pytest
import schemathesis
from flask import request, request_finished
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from blueprints.api_common.schemas import ID_MAX

from conftest import Factory, cancel

MAX_EXAMPLES = 25
FUZZ_PHASES = [Phase.explicit, Phase.generate]  # no shrinking: report the case as found
# The SPEC answers a well-formed request on an order in the wrong state with 400 invalid_state
# (and a line naming another order's item with 400 validation_error): rules of the orders, not
# of the document. So a positive case may get a 400 — but never from the server's own checks of
# the body or query string, which must allow exactly what the document allows.
POSITIVE_STATUSES = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
PARSER_REFUSALS = ("The request body is invalid", "The query string is invalid",
                   "The body is not valid JSON", "The body must be a JSON object",
                   "A JSON body is required")


@schemathesis.check
def valid_data_passes_the_parsers(ctx, response, case):
    """A positive case is never refused by parse_json / parse_query."""
    if case.meta is None or not case.meta.generation.mode.is_positive \
            or response.status_code != 400:
        return None
    message = response.json().get("error", {}).get("message", "")
    if message.startswith(PARSER_REFUSALS):
        raise AssertionError(f"the document allows what the server's parser refuses: {message}")
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, positive_data_acceptance, negative_data_rejection,
          valid_data_passes_the_parsers]


@pytest.fixture(scope="module")
def seeded(app, live_server, worker):
    """A few orders of every kind, an admin (and its token); the v2 rate limit lifted while the
    fuzzer runs (it is tested on its own in test_api_v2_errors)."""
    f = Factory(app)
    store = f.store()
    stocked, unstocked = f.product(2000), f.product(700)
    f.stock(store, stocked, on_hand=500)
    customer = f.customer()
    # Enough plain pending orders that the cancelling operations fuzzed first (v1's cancel,
    # partial cancel, bulk) leave some for the ones after (v2's cancel must succeed once).
    orders = [f.order(store, [(stocked, 1, 2000)], customer_id=customer, points_earned=5)
              for _ in range(16)]
    orders += [
        f.order(store, [(stocked, 2, 2000), (unstocked, 1, 700)], customer_id=customer,
                points_redeemed=10),
        f.order(store, [(stocked, 1, 60000)], status="in_progress", customer_id=customer),
        f.order(store, [(stocked, 1, 2000)], billing_hold=True),
        f.order(store, [(stocked, 1, 2000)], shipment_status="in_transit", paid=False),
        f.order(store, [(stocked, 1, 2000)], status="completed", reserve=False),
        f.order(store, [(stocked, 1, 2000)], age_days=40, status="on_hold"),
    ]
    admin = f.user("admin")
    token = f.token(admin)
    client = app.test_client()
    cancelled = []  # for the refund / notification / stock-return / reinstate routes
    for _ in range(2):
        cancelled.append(f.order(store, [(stocked, 1, 2000), (unstocked, 1, 700)],
                                 customer_id=customer))
        assert cancel(client, cancelled[-1], token).status_code == 200
    old_limit = app.config["API_V2_RATE_LIMIT"]
    app.config["API_V2_RATE_LIMIT"] = "100000 per minute"
    answered = []  # (method, rule, status) of every request the server handled

    def record(sender, response, **_extra):
        if request.url_rule is not None:
            answered.append((request.method, request.url_rule.rule, response.status_code))

    request_finished.connect(record, app)
    yield {"orders": orders, "cancelled": cancelled, "admin": admin, "token": token,
           "store": store, "new_token": lambda: f.token(admin),
           "products": [stocked, unstocked], "answered": answered}
    request_finished.disconnect(record, app)
    app.config["API_V2_RATE_LIMIT"] = old_limit


@pytest.fixture
def api_schema(live_server, seeded):
    loaded = schemathesis.openapi.from_url(f"{live_server}/api/openapi.json")
    loaded.config.update(base_url=live_server,
                         headers={"Authorization": f"Bearer {seeded['token']}"})
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=MAX_EXAMPLES, deterministic=True)
    loaded.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
        expected_statuses=POSITIVE_STATUSES)
    return loaded


def steer(case, seeded):
    """Point most generated ids at seeded rows (and keep some as generated). Routes that act on
    a cancelled order (refund, notification, stock return, reinstate) get cancelled ones. Only
    ids the document allows are steered: a negative case's 0, -5 or 2**31 stays as it is."""
    after_cancel = case.path.endswith(("/refund", "/reinstate")) or (
        isinstance(case.body, dict) and "order_id" in case.body)
    orders = seeded["cancelled"] if after_cancel else seeded["orders"]
    ids = {"order_id": orders, "user_id": [seeded["admin"]]}
    for name, pool in ids.items():
        value = case.path_parameters.get(name) if case.path_parameters else None
        if type(value) is int and 0 <= value <= ID_MAX and value % 4 != 3:
            case.path_parameters[name] = pool[value % len(pool)]
    if isinstance(case.body, dict) and type(case.body.get("order_id")) is int \
            and 1 <= case.body["order_id"] <= ID_MAX and case.body["order_id"] % 4 != 3:
        case.body["order_id"] = orders[case.body["order_id"] % len(orders)]


def run_operation(operation, mode, seeded):
    """Hypothesis drives schemathesis' strategy for one operation in one generation mode."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=FUZZ_PHASES)
    def fuzz(case):
        steer(case, seeded)
        if case.method == "DELETE" and case.path == "/api/auth/token":
            # Revoking the token it presents: never the one every other case signs in with.
            case.headers = dict(case.headers or {},
                                Authorization=f"Bearer {seeded['new_token']()}")
        if case.method == "POST" and case.path.startswith("/api/v2/") \
                and mode == GenerationMode.POSITIVE:
            case.headers = case.headers or {}
            case.headers["X-Idempotency-Key"] = str(uuid.uuid4())
        case.call_and_validate(checks=CHECKS, timeout=30)

    fuzz()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_and_never_fails(api_schema, seeded, subtests, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    documented = {f"{method.upper()} {path}"
                  for path, methods in api_schema.raw_schema["paths"].items() for method in methods}
    # Every operation is fuzzed but the document itself (schemathesis leaves its source alone).
    assert {o.label for o in operations} == documented - {"GET /api/openapi.json"}
    seeded["answered"].clear()
    for operation in operations:
        with subtests.test(operation=operation.label):
            try:
                run_operation(operation, mode, seeded)
            except Unsatisfiable:
                # Nothing in the operation can be made invalid (no parameters, no body).
                assert mode == GenerationMode.NEGATIVE
    if mode == GenerationMode.POSITIVE:
        # The fuzzer reached the real thing, not only 401/404s: every v2 operation succeeded
        # at least once — but reinstatement, which needs an order cancelled moments before
        # (and not yet refunded) by another case.
        succeeded = {f"{m} {rule.replace('<int:', '{').replace('>', '}')}"
                     for m, rule, status in seeded["answered"] if status < 300}
        v2 = {o.label for o in operations if o.path.startswith("/api/v2/")}
        never = v2 - succeeded - {"POST /api/v2/orders/{order_id}/reinstate"}
        assert never == set()
