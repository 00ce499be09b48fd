"""The models and the migration agree: autogenerate finds nothing left to migrate."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import config


def test_models_match_the_migrated_schema(app):
    from models import db

    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                               "compare_server_default": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == [], "models and migrations differ: run `flask db migrate`:\n" + \
        "\n".join(map(str, differences))


def test_the_database_is_at_the_single_head(app):
    from models import db

    script = ScriptDirectory(str(config.ROOT / "migrations"))
    heads = script.get_heads()
    assert len(heads) == 1, f"more than one migration head: {heads}"
    with app.app_context(), db.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_heads() == tuple(heads)
