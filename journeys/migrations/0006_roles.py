"""The roles: Django groups `Messaging team`, `Channel owner` and `Service` with their starting permissions
(orchestrator.roles), and journeys existing before this issue get their channels."""

from django.db import migrations


def roles_install(apps, schema_editor):
    from orchestrator.roles import roles_install as install

    install(apps, schema_editor)


def journey_channels_fill(apps, schema_editor):
    from journeys.definition import definition_channels

    Journey = apps.get_model("journeys", "Journey")
    JourneyVersion = apps.get_model("journeys", "JourneyVersion")
    for journey in Journey.objects.all():
        latest = JourneyVersion.objects.filter(journey=journey).order_by("-number").first()
        if latest is not None:
            journey.channels = definition_channels(latest.definition)
            journey.save(update_fields=["channels"])


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("orchestrator", "0012_authority_and_audit"),
        ("governor", "0006_audit_history"),
        ("channels_app", "0007_audit_history"),
        ("journeys", "0005_proposals_and_audit"),
    ]

    operations = [
        migrations.RunPython(roles_install, migrations.RunPython.noop),
        migrations.RunPython(journey_channels_fill, migrations.RunPython.noop),
    ]
