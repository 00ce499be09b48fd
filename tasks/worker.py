"""Worker entry point: `celery -A tasks.worker worker`. Builds the Flask app once."""
from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
