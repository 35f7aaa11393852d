"""Install one ChannelPolicy per channel with the shipped defaults (existing rows are left alone)."""

from django.db import migrations


def install(apps, schema_editor):
    from channels_app.defaults import DEFAULT_POLICIES

    ChannelPolicy = apps.get_model("channels_app", "ChannelPolicy")
    # Only the fields this migration's model state knows, so later additions to the defaults never break it.
    known = {f.name for f in ChannelPolicy._meta.get_fields()}
    for channel, fields in DEFAULT_POLICIES.items():
        ChannelPolicy.objects.get_or_create(
            channel=channel, defaults={k: v for k, v in fields.items() if k in known}
        )


def remove(apps, schema_editor):
    apps.get_model("channels_app", "ChannelPolicy").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("channels_app", "0002_policies_and_claims")]
    operations = [migrations.RunPython(install, remove)]
