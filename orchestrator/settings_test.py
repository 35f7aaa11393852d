"""Test settings: the real settings, with tasks run inline and a fast password hasher.

Tests that need a real qcluster start one in a subprocess with orchestrator.settings.
"""

import os

# DEBUG is off in tests, as in production, so the settings need a key that is not the development one.
# Set in the environment so subprocesses (qcluster, gunicorn, manage.py) started by tests inherit it.
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdefghij")

from .settings import *  # noqa: E402, F403
from .settings import Q_CLUSTER  # noqa: E402

Q_CLUSTER = {**Q_CLUSTER, "sync": True}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
