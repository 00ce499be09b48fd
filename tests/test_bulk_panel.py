"""Bulk cancellation in the panel (seed A1): the list's selection and dialog, the job page with
its results and "Retry failed", the jobs list — with a real worker cancelling the orders."""
import re

import pytest

from models import BulkJob, BulkJobItem, Customer, Order, Setting, db

from conftest import csrf_from, wait_for
from helpers import status_of, text_of

FINISHED = ("completed", "completed_with_errors", "failed")


def job_of(app, job_id):
    with app.app_context():
        job = db.session.get(BulkJob, job_id)
        return {"status": job.status, "total": job.total, "retry_of": job.retry_of_id,
                "succeeded": job.succeeded, "failed": job.failed, "user_id": job.user_id,
                "source": job.source}


def items_of(app, job_id):
    with app.app_context():
        return set(db.session.scalars(db.select(BulkJobItem.order_id).where(
            BulkJobItem.job_id == job_id)).all())


def jobs_of(app, user_id):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(BulkJob).where(
            BulkJob.user_id == user_id))


def number_of(app, order_id):
    with app.app_context():
        return db.session.get(Order, order_id).number


def wait_finished(app, job_id, timeout=60):
    return wait_for(lambda: job_of(app, job_id)["status"] in FINISHED and job_of(app, job_id),
                    timeout=timeout, interval=0.2, message=f"bulk job {job_id} to finish")


def job_id_from(response):
    assert response.status_code == 302, text_of(response)
    match = re.fullmatch(r"/bulk-jobs/(\d+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def flash_of(client, response):
    """Follow a redirect and return the text of the flash messages it shows."""
    assert response.status_code == 302, text_of(response)
    page = text_of(client.get(response.headers["Location"]))
    return " ".join(re.findall(r'data-flash="\w+">(.*?)<button', page, re.S))


def post_bulk(client, csrf, order_ids=(), **fields):
    data = {"csrf_token": csrf, "order_ids": [str(i) for i in order_ids],
            "reason": "inventory_issues", "notes": "Supplier recall", "notify_customer": "y",
            "confirmed": "y", "next": "/", **fields}
    if csrf is None:
        del data["csrf_token"]
    return client.post("/orders/bulk-cancel", data=data)


def hidden(page, name):
    """A hidden field of the bulk dialog."""
    match = re.search(rf'id="bulk-{name}" name="{name}" type="hidden" value="([^"]*)"', page)
    return match.group(1) if match else None


@pytest.fixture
def store(factory):
    return factory.managed_store(token=False)


def test_manager_cancels_ticked_orders_sees_failures_first_and_retries_them(
        app, client, auth, factory, worker, store):
    lines = [(store["product_id"], 1, 1500)]
    good = [factory.order(store["store_id"], lines) for _ in range(3)]
    held = factory.order(store["store_id"], lines, billing_hold=True)
    other_store = factory.shop()["order_id"]
    auth(store["manager_id"])

    listing = client.get("/")
    page = text_of(listing)
    assert "Bulk Actions" in page and 'id="bulk-cancel-form"' in page
    assert 'data-testid="bulk-select-page"' in page
    for order_id in good + [held]:
        assert f'name="order_ids" value="{order_id}" form="bulk-cancel-form"' in page
    # The dialog offers every reason but "Customer requested" (it needs per-customer details).
    dialog = page[page.index('id="bulk-reason"'):]
    dialog = dialog[:dialog.index("</select>")]
    assert 'value="inventory_issues"' in dialog and "customer_requested" not in dialog

    response = post_bulk(client, csrf_from(listing), good + [held, other_store])
    job_id = job_id_from(response)
    assert "Bulk cancellation #%d started: 5 order(s)" % job_id in flash_of(client, response)
    assert job_of(app, job_id)["source"] == "panel"

    job = wait_finished(app, job_id)
    assert (job["status"], job["succeeded"], job["failed"]) == ("completed_with_errors", 3, 2)
    assert [status_of(app, order_id) for order_id in good] == ["cancelled"] * 3
    assert status_of(app, held) == "pending" and status_of(app, other_store) == "pending"

    page = text_of(client.get(f"/bulk-jobs/{job_id}"))
    assert 'data-bulk-status="completed_with_errors"' in page
    assert re.search(r'data-field="percent">100<', page)
    assert re.search(r'data-field="succeeded">3<', page)
    assert re.search(r'data-field="failed">2<', page)
    assert 'data-finished="1"' in page  # the script does not poll a finished job
    rows = re.findall(r'data-item-order="(\d+)" data-item-status="(\w+)"', page)
    assert [status for _id, status in rows] == ["failed", "failed"] + ["succeeded"] * 3
    failed_rows = {int(order_id) for order_id, _status in rows[:2]}
    assert failed_rows == {held, other_store}
    assert "billing_hold_active" in page and "not_found" in page
    assert "A billing hold is active" in page
    # Own orders link to their page; another store's order shows no number, only its id.
    assert f'href="/orders/{held}"' in page and f'href="/orders/{good[0]}"' in page
    assert number_of(app, other_store) not in page and f"#{other_store}" in page
    assert "Retry failed (2)" in page

    progress = client.get(f"/bulk-jobs/{job_id}/progress")
    assert progress.is_json
    assert {key: progress.json[key] for key in ("status", "total", "processed", "succeeded",
                                                "failed", "pending", "percent", "finished")} == {
        "status": "completed_with_errors", "total": 5, "processed": 5, "succeeded": 3,
        "failed": 2, "pending": 0, "percent": 100, "finished": True}

    jobs = text_of(client.get("/bulk-jobs"))
    assert f'href="/bulk-jobs/{job_id}"' in jobs and "Completed with errors" in jobs

    response = client.post(f"/bulk-jobs/{job_id}/retry", data={"csrf_token": csrf_from(
        client.get(f"/bulk-jobs/{job_id}"))})
    retry_id = job_id_from(response)
    assert retry_id != job_id
    assert f"Retrying the 2 failed order(s) of bulk cancellation #{job_id}" in flash_of(
        client, response)
    assert items_of(app, retry_id) == {held, other_store}
    retry = wait_finished(app, retry_id)
    assert (retry["status"], retry["retry_of"], retry["total"]) == ("failed", job_id, 2)
    page = text_of(client.get(f"/bulk-jobs/{retry_id}"))
    assert f'href="/bulk-jobs/{job_id}"' in page and "Retry of the failed orders" in page
    assert f'href="/bulk-jobs/{retry_id}"' in text_of(client.get(f"/bulk-jobs/{job_id}"))


def test_select_all_matching_resolves_the_filtered_orders_of_the_users_stores(
        app, client, auth, factory, store):
    lines = [(store["product_id"], 1, 1500)]
    customer_id = factory.customer()
    with app.app_context():
        name = db.session.get(Customer, customer_id).name
    matching = [factory.order(store["store_id"], lines, customer_id=customer_id)
                for _ in range(3)]
    factory.order(store["store_id"], lines, customer_id=customer_id, status="completed")
    factory.order(store["store_id"], lines)  # another customer
    elsewhere = factory.shop()  # the same customer in a store the manager does not work in
    factory.order(elsewhere["store_id"], [(elsewhere["product_id"], 1, 2500)],
                  customer_id=customer_id)
    auth(store["manager_id"])

    listing = client.get("/", query_string={"q": name, "status": "pending"})
    page = text_of(listing)
    assert "Showing 1–3 of 3" in page
    assert 'data-matching-total="3"' in page
    assert "Select all 3 orders matching these filters" in page
    csrf, newest = csrf_from(listing), hidden(page, "max_order_id")
    assert int(newest) == max(matching)
    later = factory.order(store["store_id"], lines, customer_id=customer_id)  # placed since

    def post_matching(**fields):
        return post_bulk(client, csrf, **{"all_matching": "1", "q": name, "status": "pending",
                                          "matching_total": "3", "max_order_id": newest,
                                          **fields})

    before = jobs_of(app, store["manager_id"])
    # The count the user confirmed no longer matches: refused, nothing started.
    message = flash_of(client, post_matching(matching_total="2"))
    assert "changed since the list was shown (3 match now, 2 were selected)" in message
    # A filter the list would ignore must not widen the selection.
    message = flash_of(client, post_matching(store=str(elsewhere["store_id"])))
    assert "no longer valid" in message
    app.config["BULK_MAX_ORDERS"], limit = 2, app.config["BULK_MAX_ORDERS"]
    try:
        message = flash_of(client, post_matching())
        assert "3 orders match these filters and a bulk job takes at most 2" in message
        page = text_of(client.get("/", query_string={"q": name, "status": "pending"}))
        assert 'data-testid="bulk-too-many"' in page
    finally:
        app.config["BULK_MAX_ORDERS"] = limit
    assert jobs_of(app, store["manager_id"]) == before

    # Unconfirmed (no JavaScript), the confirmation page carries the filters, not ids.
    confirm = post_matching(confirmed="")
    assert confirm.status_code == 200 and "Cancel 3 orders?" in text_of(confirm)
    assert f'name="q" value="{name}"' in text_of(confirm)
    assert 'name="order_ids"' not in text_of(confirm)
    assert jobs_of(app, store["manager_id"]) == before

    # Ticked rows posted along are ignored: "all matching" is the filters' orders.
    job_id = job_id_from(post_matching(order_ids=[str(later)]))
    assert items_of(app, job_id) == set(matching)
    assert later not in items_of(app, job_id)


def test_problems_go_back_to_the_list_and_change_nothing(app, client, auth, factory, store):
    order_id = factory.order(store["store_id"], [(store["product_id"], 1, 1500)])
    csrf = auth(store["manager_id"]).csrf()
    back = "/?status=pending"

    response = post_bulk(client, csrf, [], next=back)
    assert response.headers["Location"] == back
    assert "select at least one order" in flash_of(client, response)
    for reason in ("customer_requested", "", "bogus"):
        message = flash_of(client, post_bulk(client, csrf, [order_id], reason=reason))
        assert "Nothing was cancelled. Reason:" in message
    assert "not valid" in flash_of(client, post_bulk(client, csrf, ["12x"]))
    assert "not valid" in flash_of(client, post_bulk(client, csrf, [2**31]))
    # "next" only ever leads back to the orders list.
    response = post_bulk(client, csrf, [], next="//evil.example/")
    assert response.headers["Location"] == "/"
    assert jobs_of(app, store["manager_id"]) == 0
    assert status_of(app, order_id) == "pending"


def test_unconfirmed_dialog_gets_the_confirmation_page(app, client, auth, factory, store):
    ids = [factory.order(store["store_id"], [(store["product_id"], 1, 1500)]) for _ in range(2)]
    auth(store["manager_id"])
    response = post_bulk(client, csrf_from(client.get("/")), ids, confirmed="", reason="")
    page = text_of(response)
    assert response.status_code == 200
    assert "Cancel 2 orders?" in page and "cannot be undone in bulk" in page
    assert all(number_of(app, order_id) in page for order_id in ids)
    assert 'name="confirmed" value="y"' in page
    assert jobs_of(app, store["manager_id"]) == 0
    # What that page posts starts the job.
    job_id = job_id_from(post_bulk(client, csrf_from(response), ids))
    assert items_of(app, job_id) == set(ids)


def test_csrf_is_required(app, client, auth, factory, store):
    order_id = factory.order(store["store_id"], [(store["product_id"], 1, 1500)])
    auth(store["manager_id"])
    assert post_bulk(client, None, [order_id]).status_code == 400
    assert post_bulk(client, "forged", [order_id]).status_code == 400
    assert jobs_of(app, store["manager_id"]) == 0

    job_id = job_id_from(post_bulk(client, csrf_from(client.get("/")), [order_id]))
    assert client.post(f"/bulk-jobs/{job_id}/retry").status_code == 400


@pytest.mark.parametrize("role", ["fulfillment", "customer_service"])
def test_roles_without_bulk_cancel_see_no_checkboxes_and_get_403(app, client, auth, factory, store,
                                                                 role):
    order_id = factory.order(store["store_id"], [(store["product_id"], 1, 1500)])
    user_id = factory.user(role, stores=[store["store_id"]])
    auth(user_id)
    listing = client.get("/")
    page = text_of(listing)
    assert number_of(app, order_id) in page
    assert 'name="order_ids"' not in page and "Bulk Actions" not in page
    assert "bulk-cancel-form" not in page and "nav-bulk-jobs" not in page
    assert post_bulk(client, csrf_from(listing), [order_id]).status_code == 403
    assert client.get("/bulk-jobs").status_code == 403
    assert jobs_of(app, user_id) == 0 and status_of(app, order_id) == "pending"


def test_only_the_owner_and_admins_see_a_job(app, client, auth, factory, store):
    order_id = factory.order(store["store_id"], [(store["product_id"], 1, 1500)])
    auth(store["manager_id"])
    job_id = job_id_from(post_bulk(client, csrf_from(client.get("/")), [order_id]))

    colleague = app.test_client()  # a manager of the same store
    auth(role="store_manager", stores=[store["store_id"]], client=colleague)
    csrf = csrf_from(colleague.get("/"))
    assert colleague.get(f"/bulk-jobs/{job_id}").status_code == 404
    assert colleague.get(f"/bulk-jobs/{job_id}/progress").status_code == 404
    assert colleague.post(f"/bulk-jobs/{job_id}/retry", data={"csrf_token": csrf}).status_code \
        == 404
    assert f'href="/bulk-jobs/{job_id}"' not in text_of(colleague.get("/bulk-jobs"))

    admin = app.test_client()
    auth(role="admin", client=admin)
    assert admin.get(f"/bulk-jobs/{job_id}").status_code == 200
    assert f'href="/bulk-jobs/{job_id}"' in text_of(admin.get("/bulk-jobs"))
    assert client.get("/bulk-jobs/2147483000").status_code == 404


def test_a_2000_order_job_sent_during_maintenance_waits_and_the_list_says_so(
        app, client, auth, factory, store):
    """The panel starts a job of 2,000 orders from "select all matching". Sent during
    maintenance it is queued; the test removes it before maintenance ends, so the shared worker
    is not left 2,000 orders to cancel."""
    ids = factory.many_orders(store["store_id"], 2000, [store["product_id"]])
    with app.app_context():
        prefix = db.session.get(Order, ids[0]).number.rsplit("-", 1)[0]
    auth(store["manager_id"])
    listing = client.get("/", query_string={"q": prefix})
    page = text_of(listing)
    assert "Select all 2,000 orders matching these filters" in page
    with app.app_context():
        Setting.put("maintenance_mode", True)
        db.session.commit()
    job_id = None
    try:
        response = post_bulk(client, csrf_from(listing), all_matching="1", q=prefix,
                             matching_total="2000", max_order_id=hidden(page, "max_order_id"))
        job_id = job_id_from(response)
        assert "Bulk cancellation #%d of 2,000 order(s) is queued: maintenance is in progress" \
            % job_id in flash_of(client, response)
        assert job_of(app, job_id)["status"] == "queued"
        assert items_of(app, job_id) == set(ids)
        page = text_of(client.get(f"/bulk-jobs/{job_id}"))
        assert "Waiting for maintenance to end" in page
        assert 'data-bulk-status="queued"' in page and 'data-finished=""' in page
        assert re.search(r'data-field="pending">2,000<', page)
        assert page.count("data-item-order=") == 100  # the results are paginated
        assert 'href="/bulk-jobs/%d?page=20"' % job_id in page
        listing = text_of(client.get("/"))
        assert re.search(r"1 bulk job running —\s*<a class=\"alert-link\" href=\"/bulk-jobs/%d\""
                         % job_id, listing)
        assert f'href="/bulk-jobs/{job_id}"' in text_of(client.get("/bulk-jobs?running=1"))
        assert status_of(app, ids[0]) == "pending"
    finally:
        with app.app_context():
            if job_id is not None:
                db.session.execute(db.delete(BulkJobItem).where(BulkJobItem.job_id == job_id))
                db.session.execute(db.delete(BulkJob).where(BulkJob.id == job_id))
            Setting.put("maintenance_mode", False)
            db.session.commit()


def test_the_jobs_list_pages_like_the_audit_log(app, client, auth, factory, store, monkeypatch):
    """The shared pagination footer: "Page n of m" and the page links, on one page only when
    there is more than one."""
    from blueprints.orders import bulk as bulk_views

    monkeypatch.setattr(bulk_views, "JOBS_PER_PAGE", 2)
    with app.app_context():
        db.session.add_all([BulkJob(user_id=store["manager_id"], reason="inventory_issues",
                                    status="completed") for _ in range(3)])
        db.session.commit()
    auth(store["manager_id"])

    first = text_of(client.get("/bulk-jobs"))
    assert "Page 1 of 2" in first
    assert re.search(r'<a class="page-link" href="/bulk-jobs\?page=2" rel="next"', first)
    second = text_of(client.get("/bulk-jobs?page=2"))
    assert "Page 2 of 2" in second and 'aria-current="page">2<' in second

    monkeypatch.setattr(bulk_views, "JOBS_PER_PAGE", 25)
    single = text_of(client.get("/bulk-jobs"))
    assert "Page 1 of" not in single and 'aria-label="Pages"' not in single
