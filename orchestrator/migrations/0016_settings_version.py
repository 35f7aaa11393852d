"""The settings version (orchestrator.snapshot): its one row, its sequence and, on PostgreSQL, the trigger
function the apps attach to the tables of the team's sending settings."""

from django.db import migrations, models

from ._settings_version import FUNCTION_DROP, FUNCTION_SQL


def version_row(apps, schema_editor):
    apps.get_model("orchestrator", "SettingsVersion").objects.get_or_create(pk=1)


def version_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION_SQL)


def version_function_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION_DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0015_work_heartbeat"),
    ]

    operations = [
        migrations.CreateModel(
            name="SettingsVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("version", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("id", 1)), name="settingsversion_one_row")
                ],
            },
        ),
        migrations.RunPython(version_row, migrations.RunPython.noop),
        migrations.RunPython(version_function, version_function_drop),
    ]
