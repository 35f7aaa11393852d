"""Install the default governor of CONTRACT.md, so a fresh install already has a sane, editable cap."""

from django.db import migrations

from governor.defaults import DEFAULT_CAP_RULES, DEFAULT_QUIET_HOURS, defaults_install


def install(apps, schema_editor):
    defaults_install(apps.get_model("governor", "CapRule"), apps.get_model("governor", "QuietHours"))


def uninstall(apps, schema_editor):
    apps.get_model("governor", "CapRule").objects.filter(
        name__in=[r["name"] for r in DEFAULT_CAP_RULES]
    ).delete()
    apps.get_model("governor", "QuietHours").objects.filter(
        name__in=[q["name"] for q in DEFAULT_QUIET_HOURS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("governor", "0001_policy_models")]

    operations = [migrations.RunPython(install, uninstall)]
