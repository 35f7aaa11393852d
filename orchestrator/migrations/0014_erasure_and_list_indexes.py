"""Erasure (the right to erasure: an audited Erasure per recipient erased, Recipient.erased_at, the
erase_recipient permission) and the (-created_at, -id) indexes the cursor-paginated lists page by."""

import django.db.models.deletion
import simple_history.models
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0013_message_external_source"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Erasure",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "token",
                    models.CharField(
                        help_text="The erased recipient's new external id.", max_length=64, unique=True
                    ),
                ),
                ("erased_at", models.DateTimeField()),
                (
                    "via",
                    models.CharField(
                        blank=True, default="", help_text="API token, admin or command.", max_length=120
                    ),
                ),
                (
                    "counts",
                    models.JSONField(
                        blank=True, default=dict, help_text="Rows scrubbed or removed, per table."
                    ),
                ),
            ],
            options={
                "ordering": ["-erased_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="HistoricalErasure",
            fields=[
                (
                    "id",
                    models.BigIntegerField(auto_created=True, blank=True, db_index=True, verbose_name="ID"),
                ),
                ("history_source", models.CharField(blank=True, db_index=True, default="", max_length=120)),
                (
                    "token",
                    models.CharField(
                        db_index=True, help_text="The erased recipient's new external id.", max_length=64
                    ),
                ),
                ("erased_at", models.DateTimeField()),
                (
                    "via",
                    models.CharField(
                        blank=True, default="", help_text="API token, admin or command.", max_length=120
                    ),
                ),
                (
                    "counts",
                    models.JSONField(
                        blank=True, default=dict, help_text="Rows scrubbed or removed, per table."
                    ),
                ),
                ("history_id", models.AutoField(primary_key=True, serialize=False)),
                ("history_date", models.DateTimeField(db_index=True)),
                ("history_change_reason", models.CharField(max_length=100, null=True)),
                (
                    "history_type",
                    models.CharField(
                        choices=[("+", "Created"), ("~", "Changed"), ("-", "Deleted")], max_length=1
                    ),
                ),
            ],
            options={
                "verbose_name": "historical erasure",
                "verbose_name_plural": "historical erasures",
                "ordering": ("-history_date", "-history_id"),
                "get_latest_by": ("history_date", "history_id"),
            },
            bases=(simple_history.models.HistoricalChanges, models.Model),
        ),
        migrations.AlterModelOptions(
            name="recipient",
            options={
                "ordering": ["external_id"],
                "permissions": [
                    ("inbox_recipient", "Can fetch a recipient's in-app inbox (marks it delivered)"),
                    ("erase_recipient", "Can erase a recipient's personal data (the right to erasure)"),
                ],
            },
        ),
        migrations.AddField(
            model_name="recipient",
            name="erased_at",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="Erased (orchestrator.erasure): an anonymous row.",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["-created_at", "-id"], name="message_created"),
        ),
        migrations.AddIndex(
            model_name="recipient",
            index=models.Index(fields=["-created_at", "-id"], name="recipient_created"),
        ),
        migrations.AddField(
            model_name="erasure",
            name="erased_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="erasure",
            name="recipient",
            field=models.OneToOneField(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="erasure",
                to="orchestrator.recipient",
            ),
        ),
        migrations.AddField(
            model_name="historicalerasure",
            name="erased_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="historicalerasure",
            name="history_user",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="historicalerasure",
            name="recipient",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="orchestrator.recipient",
            ),
        ),
    ]
