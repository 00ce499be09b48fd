"""Recurring orders (SPEC §2, seed "cancellation of recurring order"): `this_instance` cancels the
order alone, `all_future` also every later order of its series that is still cancellable — each
checked on its own, so one blocked instance never stops the rest — through API v1, API v2, the
panel, and the maintenance queue."""
import re

from models import ApprovalRequest, CancelJob, Cancellation, Order, Refund, StockLevel, User, db

from conftest import (
    assert_api_error,
    bearer,
    cancel,
    csrf_from,
    v2_cancel,
    v2_wait_cancel,
    wait_for,
)


class Series:
    """One store, one product, one customer, and a recurring series laid out in time:

    earlier (pending) < this < later_1 (pending) < blocked (pending, billing hold)
    < later_2 (on hold) < done (completed) < later_3 (pending); plus an order of another series.
    """

    def __init__(self, factory, this_status="pending", this_price=1000):
        self.factory = factory
        self.store_id = factory.store()
        self.product_id = factory.product(1000)
        factory.stock(self.store_id, self.product_id, on_hand=100)
        self.customer_id = factory.customer()
        self.series_id = f"S-{factory._unique()}"
        self.earlier = self.order(12)
        self.this = self.order(10, this_status, price=this_price)
        self.later_1 = self.order(8)
        self.blocked = self.order(7, billing_hold=True)
        self.later_2 = self.order(6, "on_hold")
        self.done = self.order(5, "completed")
        self.later_3 = self.order(4)
        self.other_series = self.order(3, series_id=f"S-other-{factory._unique()}")
        self.plain = self.order(2, series_id=None)

    def order(self, age_days, status="pending", price=1000, series_id="same", **kw):
        return self.factory.order(
            self.store_id, [(self.product_id, 1, price)], customer_id=self.customer_id,
            status=status, age_days=age_days,
            series_id=self.series_id if series_id == "same" else series_id, **kw)

    @property
    def cancelled_by_all_future(self):
        return [self.this, self.later_1, self.later_2, self.later_3]

    def statuses(self, app):
        ids = [self.earlier, self.this, self.later_1, self.blocked, self.later_2, self.done,
               self.later_3, self.other_series, self.plain]
        with app.app_context():
            return {oid: db.session.get(Order, oid).status for oid in ids}

    def expected_after_all_future(self):
        return {self.earlier: "pending", self.this: "cancelled", self.later_1: "cancelled",
                self.blocked: "pending", self.later_2: "cancelled", self.done: "completed",
                self.later_3: "cancelled", self.other_series: "pending", self.plain: "pending"}

    def expected_after_this_instance(self):
        return {**self.expected_after_all_future(), self.later_1: "pending",
                self.later_2: "on_hold", self.later_3: "pending"}

    def reserved(self, app):
        with app.app_context():
            return db.session.scalar(db.select(StockLevel.reserved).where(
                StockLevel.store_id == self.store_id, StockLevel.product_id == self.product_id))

    def number(self, app, order_id):
        with app.app_context():
            return db.session.get(Order, order_id).number


def once_each(app, order_ids):
    """Every cancelled order has exactly one cancellation and one refund."""
    with app.app_context():
        for order_id in order_ids:
            for model in (Cancellation, Refund):
                count = db.session.scalar(db.select(db.func.count()).select_from(model)
                                          .where(model.order_id == order_id))
                assert count == 1, (model.__name__, order_id, count)


# --- API v1 ----------------------------------------------------------------------------------

def test_v1_this_instance_cancels_the_order_alone(app, client, factory):
    s = Series(factory)
    token = factory.token(factory.user("store_manager", stores=[s.store_id]))
    reserved = s.reserved(app)

    response = cancel(client, s.this, token, scope="this_instance")

    assert response.status_code == 200, response.json
    assert not {"also_cancelled", "approval_requested", "also_failed"} & set(response.json)
    assert s.statuses(app) == s.expected_after_this_instance()
    assert s.reserved(app) == reserved - 1


def test_v1_all_future_cancels_later_cancellable_orders_and_reports_the_blocked_one(
        app, client, factory):
    s = Series(factory)
    token = factory.token(factory.user("store_manager", stores=[s.store_id]))
    reserved = s.reserved(app)

    response = cancel(client, s.this, token, scope="all_future")

    assert response.status_code == 200, response.json
    assert response.json["status"] == "cancelled"
    assert response.json["also_cancelled"] == [s.later_1, s.later_2, s.later_3]
    [failed] = response.json["also_failed"]
    assert failed["order_id"] == s.blocked and failed["code"] == "billing_hold_active"
    assert failed["number"] == s.number(app, s.blocked) and failed["message"]
    assert s.statuses(app) == s.expected_after_all_future()
    assert s.reserved(app) == reserved - 4
    once_each(app, s.cancelled_by_all_future)


def test_v1_all_future_when_this_order_needs_approval_still_handles_the_later_ones(
        app, client, factory):
    """Fulfillment staff: this in-progress order goes to an approver; the later pending ones
    they may cancel themselves are cancelled; the later on-hold one goes for approval too."""
    s = Series(factory, this_status="in_progress")
    token = factory.token(factory.user("fulfillment", stores=[s.store_id]))

    response = cancel(client, s.this, token, scope="all_future")

    assert response.status_code == 202, response.json
    approval = response.json["approval_request"]
    assert approval["order_id"] == s.this
    # The approver decides this order only.
    assert approval["requested_cancellation"]["scope"] == "this_instance"
    assert response.json["also_cancelled"] == [s.later_1, s.later_3]
    assert [a["order_id"] for a in response.json["approval_requested"]] == [s.later_2]
    assert [f["order_id"] for f in response.json["also_failed"]] == [s.blocked]
    statuses = s.statuses(app)
    assert statuses[s.this] == "in_progress" and statuses[s.later_2] == "on_hold"
    assert statuses[s.later_1] == statuses[s.later_3] == "cancelled"
    assert statuses[s.earlier] == "pending"


def test_v1_an_unknown_scope_is_a_validation_error(app, client, factory):
    s = Series(factory)
    token = factory.token(factory.user("admin"))
    for scope in ("everything", "", None, 1, ["all_future"]):
        error = assert_api_error(cancel(client, s.this, token, scope=scope), 400,
                                 "validation_error")
        assert "scope" in error["message"]
    assert s.statuses(app)[s.this] == "pending"


# --- API v2 ----------------------------------------------------------------------------------

def test_v2_all_future_is_reported_by_the_status(app, client, factory, worker):
    s = Series(factory)
    token = factory.token(factory.user("ops_engineer"))

    response = v2_cancel(client, s.this, token, scope="all_future")

    assert response.status_code == 202 and response.json["status"] == "processing"
    state = v2_wait_cancel(client, s.this, token)
    assert state["status"] == "completed", state
    assert state["also_cancelled"] == [s.later_1, s.later_2, s.later_3]
    assert state["also_pending_approval"] == []
    assert s.statuses(app) == s.expected_after_all_future()
    once_each(app, s.cancelled_by_all_future)


def test_v2_this_instance_is_the_default(app, client, factory, worker):
    s = Series(factory)
    token = factory.token(factory.user("ops_engineer"))

    assert v2_cancel(client, s.this, token).status_code == 202
    state = v2_wait_cancel(client, s.this, token)
    assert state["status"] == "completed" and "also_cancelled" not in state
    assert s.statuses(app) == s.expected_after_this_instance()


def test_v2_all_future_when_this_order_needs_approval(app, client, factory):
    """Ops engineers need approval above 500.00: this order waits for it, the later ones are
    cancelled right away."""
    s = Series(factory, this_price=60000)
    token = factory.token(factory.user("ops_engineer"))

    response = v2_cancel(client, s.this, token, scope="all_future")

    assert response.status_code == 202, response.json
    assert response.json["status"] == "pending_approval"
    assert response.json["approval_request"]["requested_cancellation"]["scope"] == \
        "this_instance"
    assert response.json["also_cancelled"] == [s.later_1, s.later_2, s.later_3]
    status = client.get(f"/api/v2/orders/{s.this}/cancel/status", headers=bearer(token)).json
    assert status["status"] == "pending_approval"
    assert status["also_cancelled"] == [s.later_1, s.later_2, s.later_3]
    assert s.statuses(app) == {**s.expected_after_all_future(), s.this: "pending"}


def test_v2_an_unknown_scope_is_a_validation_error(app, client, factory):
    s = Series(factory)
    token = factory.token(factory.user("ops_engineer"))
    for scope in ("next_only", None, True):
        error = assert_api_error(v2_cancel(client, s.this, token, scope=scope), 400,
                                 "validation_error")
        assert "scope" in error["message"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(CancelJob).where(
            CancelJob.order_id == s.this)) == 0


# --- the panel -------------------------------------------------------------------------------

def test_the_dialog_offers_the_scope_only_for_recurring_orders_with_the_later_count(
        app, client, auth, factory):
    s = Series(factory)
    manager = factory.user("store_manager", stores=[s.store_id])
    auth(manager)

    page = client.get(f"/orders/{s.this}").get_data(as_text=True)
    assert 'data-testid="scope-choice"' in page
    # later_1, blocked, later_2, later_3: the completed one is not cancellable any more.
    assert re.search(r'data-testid="later-count">\(4 later orders still cancellable\)', page)
    last = client.get(f"/orders/{s.later_3}").get_data(as_text=True)
    assert "no later order is still cancellable" in last
    plain = client.get(f"/orders/{s.plain}").get_data(as_text=True)
    assert 'data-testid="scope-choice"' not in plain and 'name="scope"' not in plain
    assert 'data-testid="scope-choice"' in client.get(
        f"/orders/{s.this}/cancel").get_data(as_text=True)

    listing = client.get("/", query_string={"store": s.store_id}).get_data(as_text=True)
    row = re.search(rf'data-order-row="{s.this}"[^>]*data-summary="([^"]*)"', listing, re.S)
    assert row and "recurring: 4 later orders still cancellable" in row.group(1)
    plain_row = re.search(rf'data-order-row="{s.plain}"[^>]*data-summary="([^"]*)"', listing,
                          re.S)
    assert "recurring" not in plain_row.group(1)


def post_cancel(client, order_id, page, **fields):
    return client.post(f"/orders/{order_id}/cancel", data={
        "csrf_token": csrf_from(page), "reason": "inventory_issues", "notify_customer": "y",
        "version": "1", **fields}, follow_redirects=True)


def test_panel_all_future_says_what_happened_to_each_later_order(app, client, auth, factory):
    s = Series(factory)
    auth(role="store_manager", stores=[s.store_id])
    page = client.get(f"/orders/{s.this}")

    response = post_cancel(client, s.this, page, scope="all_future")

    text = response.get_data(as_text=True)
    numbers = ", ".join(s.number(app, o) for o in (s.later_1, s.later_2, s.later_3))
    assert f"Also cancelled 3 later order(s) of the series: {numbers}." in text
    assert f"Not cancelled: {s.number(app, s.blocked)}: A billing hold is active" in text
    assert s.statuses(app) == s.expected_after_all_future()
    once_each(app, s.cancelled_by_all_future)


def test_panel_all_future_names_the_later_orders_sent_for_approval(app, client, auth, factory):
    s = Series(factory)
    auth(role="fulfillment", stores=[s.store_id])
    page = client.get(f"/orders/{s.this}")

    text = post_cancel(client, s.this, page, scope="all_future").get_data(as_text=True)

    with app.app_context():
        request_id = db.session.scalar(db.select(ApprovalRequest.id).where(
            ApprovalRequest.order_id == s.later_2))
    assert f"Sent 1 later order(s) for approval: {s.number(app, s.later_2)} (request " \
           f"#{request_id})" in text
    assert s.statuses(app)[s.later_2] == "on_hold"
    assert s.statuses(app)[s.later_3] == "cancelled"


def test_panel_this_instance_and_unknown_scopes(app, client, auth, factory):
    s = Series(factory)
    auth(role="store_manager", stores=[s.store_id])
    page = client.get(f"/orders/{s.this}")

    refused = client.post(f"/orders/{s.this}/cancel", data={
        "csrf_token": csrf_from(page), "reason": "inventory_issues", "version": "1",
        "scope": "every_order"})
    assert refused.status_code == 400
    assert s.statuses(app)[s.this] == "pending"

    text = post_cancel(client, s.this, page, scope="this_instance").get_data(as_text=True)
    assert "Also cancelled" not in text
    assert s.statuses(app) == s.expected_after_this_instance()


def test_panel_ignores_a_scope_sent_for_an_order_outside_any_series(app, client, auth, factory):
    s = Series(factory)
    auth(role="store_manager", stores=[s.store_id])
    page = client.get(f"/orders/{s.plain}")
    post_cancel(client, s.plain, page, scope="all_future")
    statuses = s.statuses(app)
    assert statuses[s.plain] == "cancelled"
    assert statuses == {**s.expected_after_this_instance(), s.this: "pending",
                        s.plain: "cancelled"}


# --- queued in maintenance mode --------------------------------------------------------------


def test_all_future_queued_in_maintenance_runs_when_it_ends(app, client, factory, worker,
                                                             maintenance_mode):
    s = Series(factory)
    token = factory.token(factory.user("store_manager", stores=[s.store_id]))

    response = cancel(client, s.this, token, scope="all_future")
    assert response.status_code == 202 and response.json["queued"] is True
    assert s.statuses(app)[s.later_1] == "pending"

    maintenance_mode(False)

    url = response.json["status_url"]
    state = wait_for(lambda: (body := client.get(url, headers=bearer(token)).json)[
        "status"] in ("completed", "failed") and body, timeout=40, interval=0.3,
        message="the queued all_future cancel")
    assert state["status"] == "completed", state
    assert state["also_cancelled"] == [s.later_1, s.later_2, s.later_3]
    assert s.statuses(app) == s.expected_after_all_future()
    once_each(app, s.cancelled_by_all_future)


def test_a_redelivered_all_future_job_finishes_the_series(app, factory):
    """The worker died after committing this order's cancel, before the later instances: the
    redelivery (or the sweep's takeover) cancels them too before it reports the job completed —
    so a poll that reads `completed` finds every instance cancelled."""
    from datetime import timedelta

    from cancellation import jobs
    from cancellation.audit import AuditContext
    from cancellation.service import CancelRequest, cancel_order
    from models import CancelJob, utcnow

    s = Series(factory)
    user = factory.user("ops_engineer")
    with app.app_context():
        actor = db.session.get(User, user)
        request = CancelRequest(reason="operational_request", notes="", scope="all_future")
        job = CancelJob(order_id=s.this, user_id=user, payload=request.to_payload(),
                        source="api_v2", attempts=1,
                        created_at=utcnow() - timedelta(minutes=5))
        db.session.add(job)
        db.session.commit()
        job_id = job.id
        # What the first run got done before it died: this order alone.
        cancel_order(s.this, actor, CancelRequest(reason="operational_request", notes=""),
                     AuditContext(source="api_v2"))
        assert db.session.get(Order, s.later_1).status == "pending"

        # The session's worker sweeps stale jobs too and may take this one over mid-run (its
        # claim then wins and this run reports "processing"): either way the job must end
        # completed, and only with the whole series cancelled.
        assert jobs.run_cancel_job(job_id) in ("completed", "processing", "nothing_to_do")

        def finished():
            db.session.rollback()
            return db.session.get(CancelJob, job_id, populate_existing=True).status != "processing"
        wait_for(finished, timeout=30, interval=0.2, message="the redelivered job")
        job = db.session.get(CancelJob, job_id)
        assert job.status == "completed", (job.status, job.error_code)
        state = jobs.job_state(job, db.session.get(Order, s.this))
    assert state["also_cancelled"] == [s.later_1, s.later_2, s.later_3]
    assert s.statuses(app) == s.expected_after_all_future()
    once_each(app, s.cancelled_by_all_future)
