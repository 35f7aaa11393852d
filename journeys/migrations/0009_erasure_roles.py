"""The roles gain erasure: the messaging team and the service account may erase a recipient (a token also
needs the `recipients:erase` scope); the team reads the erasure log."""

from django.db import migrations


def roles_install(apps, schema_editor):
    from orchestrator.roles import roles_install as install

    install(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("journeys", "0008_campaign_roles"),
        ("orchestrator", "0014_erasure_and_list_indexes"),
    ]
    operations = [migrations.RunPython(roles_install, migrations.RunPython.noop)]
