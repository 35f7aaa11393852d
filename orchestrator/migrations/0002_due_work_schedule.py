"""Install the django-q2 schedule that runs the due-work pass (the database stays the record)."""

from django.db import migrations


def install(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="orchestrator: due work",
        defaults={
            "func": "orchestrator.work.due_work_task",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="orchestrator: due work").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(install, remove)]
