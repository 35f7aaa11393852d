"""The default governor of CONTRACT.md, as plain data (the data migration and seed_demo install it)."""

from datetime import time, timedelta

CAPPED_PURPOSES = ["engagement", "promotional"]

DEFAULT_CAP_RULES = [
    {
        "name": "Engagement + promotional, 24 h",
        "limit": 3,
        "window": timedelta(hours=24),
        "channels": [],
        "purposes": CAPPED_PURPOSES,
    },
    {
        "name": "Push engagement/promotional, 4 h",
        "limit": 1,
        "window": timedelta(hours=4),
        "channels": ["push"],
        "purposes": CAPPED_PURPOSES,
    },
]

DEFAULT_QUIET_HOURS = [
    {
        "name": "Night: push and SMS",
        "channels": ["push", "sms"],
        "start": time(21, 0),
        "end": time(8, 0),
        "exempt_purposes": ["transactional", "alert"],
    },
]


def defaults_install(CapRule, QuietHours) -> int:
    """Create the default rules that are missing (by name); returns how many were created."""
    created = 0
    for spec in DEFAULT_CAP_RULES:
        _, new = CapRule.objects.get_or_create(
            name=spec["name"], defaults={k: v for k, v in spec.items() if k != "name"}
        )
        created += new
    for spec in DEFAULT_QUIET_HOURS:
        _, new = QuietHours.objects.get_or_create(
            name=spec["name"], defaults={k: v for k, v in spec.items() if k != "name"}
        )
        created += new
    return created
