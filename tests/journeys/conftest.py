"""Journey fixtures: a clock tests can move, and a way to run what commits would trigger."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone


class Clock:
    """`django.utils.timezone.now()` under the test's control."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    # 10:00 UTC on a weekday: clear of quiet hours for recipients in UTC.
    c = Clock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    monkeypatch.setattr(timezone, "now", c)
    return c


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a callable and then the on-commit callbacks it queued (tasks run inline: Q sync)."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run
