"""The worker's Celery app (`celery -A tasks.worker worker ...`, `... beat`), built once."""
import config

config.load_env_files()  # before the app reads its settings; the environment still wins

from app import create_worker_app  # noqa: E402

flask_app = create_worker_app()
celery = flask_app.extensions["celery"]
