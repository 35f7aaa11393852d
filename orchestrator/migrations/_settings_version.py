"""SQL shared by the migrations of the settings version (orchestrator.snapshot). The migration loader
skips modules whose name starts with an underscore."""

from django.db import migrations

FUNCTION_SQL = """
CREATE SEQUENCE IF NOT EXISTS orchestrator_settings_version_seq;
CREATE OR REPLACE FUNCTION orchestrator_settings_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO orchestrator_settingsversion (id, version)
    VALUES (1, nextval('orchestrator_settings_version_seq'))
    ON CONFLICT (id) DO UPDATE SET version = excluded.version;
    RETURN NULL;
END $$;
"""
FUNCTION_DROP = """
DROP FUNCTION IF EXISTS orchestrator_settings_version_bump() CASCADE;
DROP SEQUENCE IF EXISTS orchestrator_settings_version_seq;
"""


def trigger_ops(*tables):
    """Operations for an app's migration: its settings tables bump the version on any write statement."""

    def create(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return  # signals bump it elsewhere (SQLite: `make run` only)
        for table in tables:
            schema_editor.execute(
                f"CREATE TRIGGER {table}_settings_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
                f" ON {table} FOR EACH STATEMENT EXECUTE FUNCTION orchestrator_settings_version_bump()"
            )

    def drop(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in tables:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_settings_version ON {table}")

    return migrations.RunPython(create, drop)
