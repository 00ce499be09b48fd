"""The worker's Celery app (`python -m tasks`, `celery -A tasks.worker ...`), built once."""
from app import create_worker_app

flask_app = create_worker_app()
celery = flask_app.extensions["celery"]
