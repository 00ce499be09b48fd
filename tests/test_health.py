"""GET /healthz: 200 when the database, Redis and a worker answer; 503 naming the failing part."""
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import free_port


@pytest.fixture
def app_with_redis(app, database_url):
    """Build an app like the session's but with another REDIS_URL."""
    from app import create_app

    def build(redis_url):
        return create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_url,
                           "WORKER_PING_TIMEOUT": 0.5}, env="testing")

    yield build
    app.extensions["celery"].set_default()  # the session's Celery app stays the default


def test_healthy_when_database_redis_and_worker_answer(client, worker):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json
    assert response.json == {"database": "ok", "redis": "ok", "worker": "ok"}


def test_503_naming_the_worker_when_no_worker_listens(app_with_redis, redis_url, worker):
    parts = urlsplit(redis_url)
    db_number = int(parts.path.strip("/") or 0)
    # Same Redis server, another database: Celery's broadcast channels are per database, so the
    # session's running worker does not hear this app's ping.
    other = urlunsplit(parts._replace(path=f"/{(db_number + 7) % 16}"))
    response = app_with_redis(other).test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["database"] == "ok" and response.json["redis"] == "ok"
    assert response.json["worker"] != "ok" and "worker" in response.json["worker"]


def test_503_naming_redis_when_redis_is_unreachable(app_with_redis):
    response = app_with_redis(f"redis://127.0.0.1:{free_port()}/0").test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["database"] == "ok"
    assert response.json["redis"].startswith("error")
    assert response.json["worker"] != "ok"
