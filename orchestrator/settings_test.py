"""Test settings: the real settings, with tasks run inline and a fast password hasher.

Tests that need a real qcluster start one in a subprocess with orchestrator.settings.
"""

from .settings import *  # noqa: F403
from .settings import Q_CLUSTER

Q_CLUSTER = {**Q_CLUSTER, "sync": True}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
