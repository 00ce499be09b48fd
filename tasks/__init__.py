"""Celery wired to the Flask app: every task runs inside an app context."""
import logging

from flask import has_app_context

DELIVERY_QUEUE = "cancel_desk.deliveries"


def celery_init_app(app):
    from celery import Celery, Task
    from celery.signals import setup_logging, task_failure, worker_ready
    from kombu import Queue

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            if has_app_context():  # already inside one (a task called from a request, a test)
                return self.run(*args, **kwargs)
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=FlaskTask)
    url = app.config["REDIS_URL"]
    celery.conf.update(
        broker_url=url,
        result_backend=url,
        task_ignore_result=True,
        result_expires=24 * 3600,
        # At-least-once: a task is acknowledged after it ran; a killed worker's task is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Deliveries (refunds, customer notices) wait on a queue of their own, which a worker
        # takes from only when the main queue is empty ("priority": Redis BRPOP tries the
        # queues in this order): the thousands of deliveries a bulk job leaves behind never
        # hold up the next job's batches, a cancel job, an approval or a sweep.
        task_queues=(Queue("cancel_desk"), Queue(DELIVERY_QUEUE)),
        task_routes={"cancel_desk.deliver_refund*": {"queue": DELIVERY_QUEUE},
                     "cancel_desk.deliver_notification*": {"queue": DELIVERY_QUEUE},
                     "cancel_desk.deliver_outbox": {"queue": DELIVERY_QUEUE}},
        broker_transport_options={"visibility_timeout": 3600,
                                  "queue_order_strategy": "priority"},
        broker_connection_retry_on_startup=True,
        result_backend_always_retry=True,
        task_default_queue="cancel_desk",
        worker_hijack_root_logger=False,
        # A bulk batch (BULK_BATCH_SIZE orders) is the longest task; see config.Base.
        task_soft_time_limit=app.config["TASK_SOFT_TIME_LIMIT"],
        task_time_limit=app.config["TASK_TIME_LIMIT"],
        # Task events, for a monitor such as Flower (`celery -A tasks.worker flower`).
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            "sweep-outbox": {"task": "cancel_desk.sweep_outbox",
                             "schedule": app.config["OUTBOX_SWEEP_INTERVAL"]},
            "sweep-cancel-jobs": {"task": "cancel_desk.sweep_cancel_jobs",
                                  "schedule": app.config["OUTBOX_SWEEP_INTERVAL"]},
            "bulk-watchdog": {"task": "cancel_desk.bulk_watchdog",
                              "schedule": app.config["BULK_WATCHDOG_INTERVAL"]},
            # Cancellations queued in maintenance mode run once it is off, even when the message
            # sent at the switch was lost.
            "release-queued-cancellations": {"task": "cancel_desk.release_queued",
                                             "schedule": app.config["OUTBOX_SWEEP_INTERVAL"]},
            "purge-idempotency-keys": {"task": "cancel_desk.purge_idempotency_keys",
                                       "schedule": app.config["IDEMPOTENCY_PURGE_INTERVAL"]},
            "expire-approval-requests": {
                "task": "cancel_desk.expire_approval_requests",
                "schedule": app.config.get("APPROVAL_SWEEP_INTERVAL",
                                           app.config["OUTBOX_SWEEP_INTERVAL"])},
        },
    )
    celery.set_default()
    app.extensions["celery"] = celery
    worker_ready.connect(_sweep_at_start)  # once: a receiver connected twice is kept once
    setup_logging.connect(_keep_our_logging)
    task_failure.connect(_log_task_failure)
    import tasks.approvals  # noqa: F401
    import tasks.bulk  # noqa: F401
    import tasks.cancel  # noqa: F401  (registers the tasks)
    import tasks.delivery  # noqa: F401
    import tasks.maintenance  # noqa: F401
    return celery


def _sweep_at_start(sender, **_kwargs):
    """Outbox rows whose task died with the last worker go out as soon as a worker is back."""
    sender.app.send_task("cancel_desk.sweep_outbox")
    sender.app.send_task("cancel_desk.sweep_cancel_jobs")
    sender.app.send_task("cancel_desk.bulk_watchdog")
    sender.app.send_task("cancel_desk.release_queued")


def _keep_our_logging(loglevel=None, **_kwargs):
    """A worker logs through the handler the app's factory installed (config/logging.py): with
    a receiver on this signal Celery adds none of its own. --loglevel still sets the level."""
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def _log_task_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None,
                      einfo=None, **_extra):
    """One line per failed task: its name, id, arguments (ids, never rows) and the exception."""
    name = getattr(sender, "name", sender)
    failure = (type(exception), exception, exception.__traceback__) if exception else None
    logging.getLogger("tasks").error(
        "task %s[%s] failed: %s: %s (args=%r kwargs=%r)", name, task_id,
        type(exception).__name__, exception, args, kwargs, exc_info=failure,
        extra={"task_id": task_id, "task_name": name})
