"""Admin template tags of the journeys app."""

from __future__ import annotations

from django import template
from django.urls import reverse

from journeys.selectors import enrollments_errored_count

register = template.Library()


@register.inclusion_tag("admin/journeys/attention.html")
def journeys_attention() -> dict:
    """What needs a person on the admin home: enrollments the scheduler stopped on an error."""
    return {
        "errored": enrollments_errored_count(),
        "errored_url": reverse("admin:journeys_enrollment_changelist") + "?status__exact=errored",
    }
