import pytest

from governor.defaults import defaults_install
from governor.models import CapRule, ChannelPause, QuietHours
from governor.policy import policy_cache_clear


@pytest.fixture
def default_governor(db):
    """Exactly the default governor of CONTRACT.md (whatever earlier tests left behind)."""
    CapRule.objects.all().delete()
    QuietHours.objects.all().delete()
    ChannelPause.objects.all().delete()
    defaults_install(CapRule, QuietHours)
    policy_cache_clear()


@pytest.fixture
def no_governor(db):
    """No cap rules, no quiet hours, no pauses: add exactly what a test needs."""
    CapRule.objects.all().delete()
    QuietHours.objects.all().delete()
    ChannelPause.objects.all().delete()
    policy_cache_clear()
