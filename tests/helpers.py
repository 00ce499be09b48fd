"""Helpers shared by test modules: firing competing calls at once and reading what they did."""
import threading

from sqlalchemy import func, select

from cancellation import verify_chain
from models import db


def race(*calls, timeout=120):
    """Run each zero-argument call in its own thread, all released at once; their results (an
    exception raised is returned in its place)."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a racer never finished"
    return results


def in_app(app, function, *args):
    """`function(*args)` as a worker runs it: in an app context (and a session) of its own."""
    def call():
        with app.app_context():
            return function(*args)
    return call


def count(app, model, *where):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def chain_ok(app):
    with app.app_context():
        report = verify_chain()
    assert report.ok, report


def answer(response):
    """(status code, error code or None): what a user of the API sees."""
    code = None
    if response.status_code >= 400 and response.is_json:
        code = response.json["error"]["code"]
    return response.status_code, code
