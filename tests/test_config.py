"""Configuration comes from the environment; production refuses to start half-configured."""
import pytest

import config


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://desk.example.com")
    monkeypatch.setenv("API_V2_RATE_LIMIT", "30 per minute")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db.example.com/desk")
    settings = config.load("testing")
    assert settings["PUBLIC_BASE_URL"] == "https://desk.example.com"
    assert settings["API_V2_RATE_LIMIT"] == "30 per minute"
    assert settings["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db.example.com/desk"


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL"])
def test_production_needs_its_secrets_and_services(monkeypatch, missing):
    for name, value in {"SECRET_KEY": "s3cret", "DATABASE_URL": "postgresql://db/desk",
                        "REDIS_URL": "redis://cache:6379/0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(missing)
    with pytest.raises(RuntimeError, match=missing):
        config.load("production")


def test_unknown_environment_is_refused():
    with pytest.raises(RuntimeError, match="unknown CANCEL_DESK_ENV"):
        config.load("staging")
