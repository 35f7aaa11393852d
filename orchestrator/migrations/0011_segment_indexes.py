"""What segments need on PostgreSQL: a GIN index on recipient attributes (jsonb @> and ? for eq, in and
exists) and a date cast that answers NULL instead of failing on a malformed value (date comparisons).

SQLite (`make run`) needs neither: segments compare dates there with julianday(), which is NULL-safe.
"""

from django.db import migrations

FUNCTION = r"""
CREATE OR REPLACE FUNCTION orch_try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL OR value !~ '^\d{4}-\d\d-\d\d' THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN value::timestamptz;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
END
$$
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS recipient_attributes_gin ON orchestrator_recipient USING gin (attributes)"
    )
    schema_editor.execute(FUNCTION)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS recipient_attributes_gin")
    schema_editor.execute("DROP FUNCTION IF EXISTS orch_try_timestamptz(text)")


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0010_segment")]
    operations = [migrations.RunPython(forwards, backwards)]
