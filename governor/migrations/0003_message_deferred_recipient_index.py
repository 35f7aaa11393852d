"""An index for priority arbitration: one recipient's deferred messages that are due.

The decision counts a recipient's due deferred messages that are ahead in the queue; orchestrator's
partial index (deliver_after, priority) has no recipient column. Plain SQL so the governor owns it
(partial indexes work the same on PostgreSQL and SQLite).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("governor", "0002_default_governor"), ("orchestrator", "0003_message_to_address")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS governor_message_deferred_recipient "
            "ON orchestrator_message (recipient_id, deliver_after) WHERE status = 'deferred'",
            "DROP INDEX IF EXISTS governor_message_deferred_recipient",
        )
    ]
