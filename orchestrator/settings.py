"""Settings from the environment (12-factor).

DATABASE_URL defaults to an embedded SQLite file under var/ so the tool runs anywhere; production and
the test suite use PostgreSQL through psycopg 3.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-insecure-key-change-me-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "anymail",
    "orchestrator",
    "governor",
    "channels_app",
    "journeys",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "orchestrator.urls"
WSGI_APPLICATION = "orchestrator.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'orchestrator.sqlite3'}"),
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves one developer: wait for the writer instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
# Languages of the recipient-facing pages (the preference centre), chosen by the recipient's locale.
# Translations live in orchestrator/locale/ and are committed compiled (.mo), so a fresh machine needs
# no gettext; `manage.py compilemessages` (GNU gettext's msgfmt) rebuilds them after an edit.
LANGUAGES = [("en", "English"), ("fr", "Français"), ("pt-br", "Português (Brasil)")]
LOCALE_PATHS = [BASE_DIR / "orchestrator" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing root before collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "orchestrator.api.errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Orchestrator API",
    "DESCRIPTION": "One conversation with each recipient across email, push, in-app and SMS.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from vendored static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# django-q2 is only the transport; PostgreSQL is the record. timeout < retry, bounded attempts.
Q_CLUSTER = {
    "name": "orchestrator",
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": 60,
    "retry": 90,
    "max_attempts": 3,
    "ack_failures": True,
    "catch_up": False,
    "poll": 0.2,
    "orm": "default",
    "sync": env_bool("Q_SYNC", False),
    "save_limit": 1000,
    "label": "Tasks",
}
if os.environ.get("REDIS_URL"):
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = os.environ["REDIS_URL"]

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "orchestrator@localhost")

# Absolute links in messages (the preference centre, List-Unsubscribe) and the URL a provider signed
# (Twilio's X-Twilio-Signature covers the full URL it called). Set it to the public origin, e.g.
# https://messages.example.com; unset, links are built from the request or fall back to localhost.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# Consent and reachability (orchestrator.consent, the preference centre, channels' suppression).
CONSENT = {
    # How long a preference link (and a List-Unsubscribe URL) stays valid.
    "LINK_MAX_AGE": timedelta(days=int(os.environ.get("PREFERENCE_LINK_MAX_AGE_DAYS", "90"))),
    # The mailto: of List-Unsubscribe; blank: unsubscribe@ the DEFAULT_FROM_EMAIL domain.
    "UNSUBSCRIBE_MAILTO": os.environ.get("UNSUBSCRIBE_MAILTO", ""),
    # Soft bounces in a row after which an address counts as undeliverable.
    "SOFT_BOUNCE_LIMIT": int(os.environ.get("SOFT_BOUNCE_LIMIT", "3")),
    # A journey or campaign is flagged on its page at twice its channel's opt-out rate with at least
    # this many opt-outs (fewer is noise); over this look-back.
    "BURN_MIN_OPT_OUTS": int(os.environ.get("BURN_MIN_OPT_OUTS", "3")),
    "BURN_LOOKBACK": timedelta(days=int(os.environ.get("BURN_LOOKBACK_DAYS", "28"))),
    # Answers to SMS keywords (sent as transactional replies, exempt from caps and quiet hours).
    "SMS_HELP_TEXT": os.environ.get(
        "SMS_HELP_TEXT",
        "Orchestrator alerts: reply STOP to unsubscribe, START to resubscribe. Help: support@example.com",
    ),
    "SMS_STOP_TEXT": os.environ.get(
        "SMS_STOP_TEXT", "You are unsubscribed and will receive no more messages. Reply START to resubscribe."
    ),
    "SMS_START_TEXT": os.environ.get(
        "SMS_START_TEXT", "You are subscribed again. Reply HELP for help, STOP to unsubscribe."
    ),
}

# django-anymail: the ESP for EMAIL_BACKEND and its tracking webhooks at /anymail/<esp>/tracking/.
# WEBHOOK_SECRET ("user:password", basic auth in the webhook URL the ESP calls) is required in
# production; each ESP's own signing key (e.g. MAILGUN_WEBHOOK_SIGNING_KEY) is read by anymail too.
ANYMAIL = {
    "WEBHOOK_SECRET": os.environ.get("ANYMAIL_WEBHOOK_SECRET", ""),
    **{
        key.removeprefix("ANYMAIL_"): value
        for key, value in os.environ.items()
        if key.startswith("ANYMAIL_") and key != "ANYMAIL_WEBHOOK_SECRET"
    },
}

# The orchestrator's own knobs; each app reads its part.
ORCHESTRATOR = {
    # How long a stored Idempotency-Key response is honoured.
    "IDEMPOTENCY_TTL": timedelta(hours=24),
    # Sends recorded from other systems (orchestrator.recording): how far ahead of our clock a sent_at
    # may be (their clocks drift), and rows per transaction of `history_import`.
    "HISTORY": {
        "CLOCK_SKEW": timedelta(seconds=int(os.environ.get("HISTORY_CLOCK_SKEW_SECONDS", "60"))),
        "IMPORT_BATCH": int(os.environ.get("HISTORY_IMPORT_BATCH", "5000")),
    },
    # Due-work functions run by `orchestrate --once` and the django-q2 schedule (orchestrator.work).
    # Order matters within one pass: re-decide deferred messages, advance journeys (which send), then
    # deliver whatever is accepted and due.
    "DUE_WORK": [
        "governor.redrive.deferred_redrive",
        "journeys.scheduler.enrollments_advance_due",
        "channels_app.delivery.deliveries_sweep",
    ],
    # How often the django-q2 schedule runs the due-work pass.
    "DUE_WORK_EVERY_MINUTES": 1,
    # Measurement (journeys.reports): the time-decay half-life and the statuses that count as a touch
    # reaching the recipient, when a report does not say (`half_life`, `reached`); the sort memory a
    # report statement may use on PostgreSQL.
    "REPORTS": {
        "HALF_LIFE": timedelta(days=float(os.environ.get("REPORT_HALF_LIFE_DAYS", "7"))),
        "REACHED": tuple(env_list("REPORT_REACHED", "delivered,opened,clicked")),
        "WORK_MEM": os.environ.get("REPORT_WORK_MEM", "64MB"),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}


# Channels (channels_app): provider backend per channel by dotted path, like EMAIL_BACKEND. The defaults
# keep everything on this machine (email through EMAIL_BACKEND = console, SMS and push in memory).
def channel_backends(channel: str, default: str) -> str | list[str]:
    """CHANNEL_<X>_BACKENDS (comma-separated, tried in order: failover) or the single CHANNEL_<X>_BACKEND."""
    several = env_list(f"CHANNEL_{channel.upper()}_BACKENDS")
    return several or os.environ.get(f"CHANNEL_{channel.upper()}_BACKEND", default)


CHANNELS = {
    # One dotted path per channel, or a list tried in order (failover); a list entry may also be a dict
    # {"BACKEND": path, "NAME": "...", "TIMEOUT": seconds, "OPTIONS": {...}} (channels_app.providers).
    "BACKENDS": {
        "email": channel_backends("email", "channels_app.backends.email.DjangoEmailBackend"),
        "sms": channel_backends("sms", "channels_app.backends.sms.LocmemSmsBackend"),
        "push": channel_backends("push", "channels_app.backends.push.LocmemPushBackend"),
        "in_app": channel_backends("in_app", "channels_app.backends.in_app.InboxBackend"),
    },
    # A provider that fails FAILURES times in a row is skipped for COOLDOWN (its channel fails over to
    # the next provider), then tried once; one delivery stops failing over after FAILOVER_BUDGET.
    "CIRCUIT": {
        "FAILURES": int(os.environ.get("CHANNEL_CIRCUIT_FAILURES", "5")),
        "COOLDOWN": timedelta(seconds=float(os.environ.get("CHANNEL_CIRCUIT_COOLDOWN_SECONDS", "60"))),
        "FAILOVER_BUDGET": timedelta(seconds=float(os.environ.get("CHANNEL_FAILOVER_BUDGET_SECONDS", "60"))),
    },
    # Transient errors retry with exponential backoff and jitter: 8 tries over about 30 minutes.
    "RETRY_MAX_ATTEMPTS": int(os.environ.get("CHANNEL_RETRY_MAX_ATTEMPTS", "8")),
    "RETRY_BASE_DELAY": timedelta(seconds=float(os.environ.get("CHANNEL_RETRY_BASE_SECONDS", "15"))),
    "RETRY_MAX_DELAY": timedelta(seconds=float(os.environ.get("CHANNEL_RETRY_MAX_SECONDS", "900"))),
    "RETRY_JITTER": float(os.environ.get("CHANNEL_RETRY_JITTER", "0.2")),
    # A claimed attempt with no result after this long is presumed lost (worker died) and re-driven.
    # Keep it above Q_CLUSTER["timeout"].
    "DELIVERY_LEASE": timedelta(seconds=float(os.environ.get("CHANNEL_DELIVERY_LEASE_SECONDS", "300"))),
    # The sweeper re-drives an accepted message whose first task has not run after this long.
    "REDRIVE_AFTER": timedelta(seconds=float(os.environ.get("CHANNEL_REDRIVE_AFTER_SECONDS", "120"))),
    # Message ids per delivery task; a task claims CLAIM_CHUNK of them per transaction and hands the
    # rest to a new task once it has run TASK_TIME_BUDGET (keep it below Q_CLUSTER["timeout"]).
    "TASK_BATCH_SIZE": int(os.environ.get("CHANNEL_TASK_BATCH_SIZE", "50")),
    "CLAIM_CHUNK": int(os.environ.get("CHANNEL_CLAIM_CHUNK", "10")),
    "TASK_TIME_BUDGET": timedelta(seconds=float(os.environ.get("CHANNEL_TASK_TIME_BUDGET_SECONDS", "30"))),
    # Twilio-style SMS REST API (channels_app.backends.sms.TwilioSmsBackend).
    "SMS_HTTP": {
        "BASE_URL": os.environ.get("SMS_HTTP_BASE_URL", "https://api.twilio.com"),
        "ACCOUNT_SID": os.environ.get("SMS_HTTP_ACCOUNT_SID", ""),
        "AUTH_TOKEN": os.environ.get("SMS_HTTP_AUTH_TOKEN", ""),
        "FROM": os.environ.get("SMS_HTTP_FROM", ""),
        "STATUS_CALLBACK": os.environ.get("SMS_HTTP_STATUS_CALLBACK", ""),
        "TIMEOUT": float(os.environ.get("SMS_HTTP_TIMEOUT", "10")),
    },
    # Firebase Cloud Messaging HTTP v1 (channels_app.backends.fcm.FcmBackend): a service account's JSON
    # (the file's path or its content) authorises the calls; BASE_URL is for tests and proxies.
    "FCM": {
        "SERVICE_ACCOUNT": os.environ.get("FCM_SERVICE_ACCOUNT", ""),
        "PROJECT_ID": os.environ.get("FCM_PROJECT_ID", ""),
        "BASE_URL": os.environ.get("FCM_BASE_URL", "https://fcm.googleapis.com"),
        "TIMEOUT": float(os.environ.get("FCM_TIMEOUT", "10")),
    },
    # Web Push with VAPID (channels_app.backends.push.WebPushBackend).
    "WEBPUSH": {
        "VAPID_PRIVATE_KEY": os.environ.get("WEBPUSH_VAPID_PRIVATE_KEY", ""),
        "VAPID_SUBJECT": os.environ.get("WEBPUSH_VAPID_SUBJECT", "mailto:orchestrator@localhost"),
        "TIMEOUT": float(os.environ.get("WEBPUSH_TIMEOUT", "10")),
    },
    # Shared secrets that let a provider post receipts to webhooks/{provider}/ without an API token
    # (sent as ?token= or X-Webhook-Token). Format: "twilio=secret1,generic=secret2".
    "WEBHOOK_TOKENS": dict(item.split("=", 1) for item in env_list("CHANNEL_WEBHOOK_TOKENS") if "=" in item),
}
