"""The roles gain campaigns, segments and templates: the messaging team everything (approve, reject,
cancel); channel owners write, test and propose campaigns on their channels and build templates."""

from django.db import migrations


def roles_install(apps, schema_editor):
    from orchestrator.roles import roles_install as install

    install(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("journeys", "0007_campaign_review"),
        ("orchestrator", "0012_authority_and_audit"),
        ("channels_app", "0007_audit_history"),
    ]
    operations = [migrations.RunPython(roles_install, migrations.RunPython.noop)]
