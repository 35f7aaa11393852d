from datetime import time, timedelta

import factory

from governor.models import CapRule, QuietHours


class CapRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CapRule

    name = factory.Sequence(lambda n: f"rule {n}")
    limit = 3
    window = timedelta(hours=24)
    channels = factory.LazyFunction(list)
    purposes = factory.LazyFunction(lambda: ["engagement", "promotional"])


class QuietHoursFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = QuietHours

    name = factory.Sequence(lambda n: f"quiet {n}")
    channels = factory.LazyFunction(lambda: ["push", "sms"])
    start = time(21, 0)
    end = time(8, 0)
    exempt_purposes = factory.LazyFunction(lambda: ["transactional", "alert"])
