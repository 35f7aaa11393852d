"""Any write statement on the channel policies bumps the settings version (PostgreSQL)."""

from django.db import migrations

from orchestrator.migrations import _settings_version

trigger_ops = _settings_version.trigger_ops


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0007_audit_history"),
        ("orchestrator", "0016_settings_version"),
    ]

    operations = [trigger_ops("channels_app_channelpolicy")]
