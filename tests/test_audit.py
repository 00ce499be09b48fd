"""The hash-chained audit trail: it verifies, and any edit or removal names the broken event.

Edits on the session's shared database are undone byte for byte before the test ends; removing
events is tried on a separate throw-away database, since later tests need a whole chain.
"""
import pytest
from sqlalchemy import JSON, bindparam, text

from conftest import cancel


def cancelled_order_event(app, client, factory):
    """Cancel an order through the API; return the seq of its 'order.cancelled' event."""
    from models import AuditEvent, db

    shop = factory.shop(role="admin")
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200
    with app.app_context():
        return db.session.scalar(db.select(AuditEvent.seq).where(
            AuditEvent.order_id == shop["order_id"], AuditEvent.action == "order.cancelled"))


def verify(app):
    from cancellation import verify_chain

    with app.app_context():
        return verify_chain()


def test_the_chain_verifies(app, client, factory):
    cancelled_order_event(app, client, factory)
    report = verify(app)
    assert report.ok, report
    assert report.checked >= 1 and report.first_broken_seq is None


def test_editing_after_is_detected_and_names_the_row(app, client, factory, restore_row):
    from models import db

    seq = cancelled_order_event(app, client, factory)
    restore_row(seq)
    with app.app_context():
        db.session.execute(
            text("UPDATE audit_events SET after = :after WHERE seq = :seq")
            .bindparams(bindparam("after", type_=JSON)),
            {"after": {"status": "pending", "reason": "nothing happened"}, "seq": seq})
        db.session.commit()

    report = verify(app)

    assert not report.ok
    assert report.first_broken_seq == seq
    assert f"#{seq}" in report.problem and "altered" in report.problem


def test_editing_action_is_detected_and_names_the_row(app, client, factory, restore_row):
    from models import db

    seq = cancelled_order_event(app, client, factory)
    restore_row(seq)
    with app.app_context():
        db.session.execute(text("UPDATE audit_events SET action = 'order.viewed' WHERE seq = :s"),
                           {"s": seq})
        db.session.commit()

    report = verify(app)

    assert not report.ok and report.first_broken_seq == seq


def test_the_orm_refuses_to_change_or_delete_an_event(app, client, factory):
    from models import AuditEvent, db

    seq = cancelled_order_event(app, client, factory)
    with app.app_context():
        event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.seq == seq))
        event.action = "order.viewed"
        with pytest.raises(PermissionError):
            db.session.flush()
        db.session.rollback()
        event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.seq == seq))
        db.session.delete(event)
        with pytest.raises(PermissionError):
            db.session.flush()
        db.session.rollback()
    assert verify(app).ok


@pytest.fixture
def scratch_app(app, tmp_path, redis_url):
    """An app on its own empty, migrated SQLite database."""
    from flask_migrate import upgrade

    from app import create_app

    scratch = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'audit.sqlite'}",
                          "REDIS_URL": redis_url}, env="testing")
    with scratch.app_context():
        upgrade()
    yield scratch
    from models import db
    with scratch.app_context():
        db.engine.dispose()
    app.extensions["celery"].set_default()  # the session's Celery app stays the default


def write_events(scratch, count):
    from cancellation import record
    from models import db

    with scratch.app_context():
        for number in range(count):
            record(None, "test.event", target_type="test", target_id=number,
                   after={"n": number})
            db.session.commit()


def test_an_empty_chain_and_the_first_events_verify(scratch_app):
    assert verify(scratch_app).ok and verify(scratch_app).checked == 0
    write_events(scratch_app, 3)
    report = verify(scratch_app)
    assert report.ok and report.checked == 3


def test_removing_the_last_event_is_detected(scratch_app):
    from models import db

    write_events(scratch_app, 4)
    with scratch_app.app_context():
        db.session.execute(text("DELETE FROM audit_events WHERE seq = 4"))
        db.session.commit()

    report = verify(scratch_app)

    assert not report.ok
    assert report.first_broken_seq == 4 and "removed" in report.problem


def test_removing_an_event_in_the_middle_is_detected(scratch_app):
    from models import db

    write_events(scratch_app, 5)
    with scratch_app.app_context():
        db.session.execute(text("DELETE FROM audit_events WHERE seq = 2"))
        db.session.commit()

    report = verify(scratch_app)

    assert not report.ok and report.first_broken_seq == 2 and "missing" in report.problem


def test_rewriting_an_event_with_a_recomputed_hash_breaks_the_next_link(scratch_app):
    from cancellation.audit import compute_hash
    from models import AuditEvent, db

    write_events(scratch_app, 3)
    with scratch_app.app_context():
        event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.seq == 2))
        event.after = {"n": 99}
        forged = compute_hash(event)
        db.session.expunge(event)
        db.session.execute(
            text("UPDATE audit_events SET after = :after, hash = :hash WHERE seq = 2")
            .bindparams(bindparam("after", type_=JSON)), {"after": {"n": 99}, "hash": forged})
        db.session.commit()

    report = verify(scratch_app)

    assert not report.ok and report.first_broken_seq == 3
