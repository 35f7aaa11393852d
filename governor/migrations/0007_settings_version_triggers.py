"""Any write statement on the governor's settings tables bumps the settings version (PostgreSQL)."""

from django.db import migrations

from orchestrator.migrations import _settings_version

trigger_ops = _settings_version.trigger_ops


class Migration(migrations.Migration):
    dependencies = [
        ("governor", "0006_audit_history"),
        ("orchestrator", "0016_settings_version"),
    ]

    operations = [
        trigger_ops(
            "governor_caprule", "governor_quiethours", "governor_channelpause", "governor_globalholdout"
        )
    ]
