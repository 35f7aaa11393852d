"""Settings from the environment (12-factor).

DATABASE_URL defaults to an embedded SQLite file under var/ so the tool runs anywhere; production and
the test suite use PostgreSQL through psycopg 3.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Safe by default: DEBUG is off unless set (`make run` sets it for local use), and with DEBUG off the
# server refuses to start on the built-in development key. Production settings: docs/deployment.md.
DEBUG = env_bool("DEBUG", False)
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-change-me-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY") or (DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not DEBUG and SECRET_KEY in ("", DEVELOPMENT_SECRET_KEY):
    raise ImproperlyConfigured(
        "DEBUG is off, so SECRET_KEY must be set to a long random value (not the development key): "
        "see docs/deployment.md, or set DEBUG=true for local use."
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Behind an HTTPS-terminating proxy (HTTPS=true): HSTS, secure cookies, redirect to https, and trust the
# proxy's X-Forwarded-Proto. `manage.py check --deploy` is clean with these (docs/deployment.md).
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_PROXY", HTTPS) else None
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
# The health endpoints answer plain HTTP inside the network (load balancers probe them without TLS).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
X_FRAME_OPTIONS = "DENY"

# Request bodies: at most 1 MiB (the API answers 413 beyond it, before parsing).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_BYTES", 1024 * 1024))

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
    "axes",
    "rules.apps.AutodiscoverRulesConfig",
    "simple_history",
    "anymail",
    "orchestrator",
    "governor",
    "channels_app",
    "journeys",
]

MIDDLEWARE = [
    "orchestrator.api.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "orchestrator.api.middleware.ApiGuardMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Audit: the request (its user and path) is known to every history record written while it runs.
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into a 429 page.
    "axes.middleware.AxesMiddleware",
]

# Admin login throttling with django-axes: failed attempts are counted in the database, so every
# gunicorn worker and host sees the same count (a per-process cache would not); 5 failures for one
# username from one address lock that pair out for 15 minutes (a username alone would let anyone lock
# the team out), and a success resets the count.
AUTHENTICATION_BACKENDS = [
    "orchestrator.throttle.WebLoginThrottleBackend",  # django-axes: first, so a locked-out login stops here
    "rules.permissions.ObjectPermissionBackend",  # the object-level checks of orchestrator.authority
    "orchestrator.authority.RoleBackend",  # Django's ModelBackend, its two permission queries made one
]
AXES_FAILURE_LIMIT = int(os.environ.get("ADMIN_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("ADMIN_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

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
                "orchestrator.health.admin_health",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'orchestrator.sqlite3'}"),
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        # A persistent connection the database dropped is noticed at the next request and replaced.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves one developer: wait for the writer instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
else:
    # Django turns psycopg's prepared statements off (prepare_threshold None) unless asked, and with them
    # off `prepare=True` is ignored: the hot path's statements (orchestrator.db.hot_cursor) were parsed and
    # planned at every send. On, they are prepared once per connection. The ORM is unaffected (its
    # client-side binding cursors never prepare). See docs/deployment.md for PgBouncer.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Roles are Django groups with model permissions (ModelBackend); django-rules adds the object-level rules
# (channels owned, separation of duties) of orchestrator.authority.
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
        # Scoped service tokens (orch_...) first; a user's own token (drf_create_token) acts with its roles.
        "orchestrator.api.permissions.ServiceTokenAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view declares the scope and permission each method needs; a view that does not is closed.
    "DEFAULT_PERMISSION_CLASSES": ["orchestrator.api.permissions.Authorized"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "orchestrator.api.errors.exception_handler",
    # JSON objects only; a NUL character or absurd nesting is a 400 naming the field (orchestrator.limits).
    "DEFAULT_PARSER_CLASSES": [
        "orchestrator.api.parsers.JSONParser",
        "orchestrator.api.parsers.FormParser",
        "orchestrator.api.parsers.MultiPartParser",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Orchestrator API",
    "DESCRIPTION": "One conversation with each recipient across email, push, in-app and SMS.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The API is JSON: forms are still read (provider webhooks post them) but not advertised.
    "PARSER_WHITELIST": ["orchestrator.api.parsers.JSONParser"],
    # One name per shared choice set (else drf-spectacular warns and `check --deploy` is not clean).
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "orchestrator.models.Channel",
        "ChannelOrAutoEnum": ["email", "push", "sms", "in_app", "auto"],
        "PurposeEnum": "orchestrator.models.Purpose",
        "MessageStatusEnum": "orchestrator.models.MessageStatus",
    },
    # Swagger UI served from vendored static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents the errors it can answer (400/401/403/404/405/409/413/415/503).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "orchestrator.api.schema.error_responses_add",
    ],
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
# A provider call never outlives the delivery lease (CHANNELS["DELIVERY_LEASE"]).
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", "10"))
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
        "journeys.campaigns.campaigns_advance_due",
        "channels_app.delivery.deliveries_sweep",
    ],
    # Entries other apps add to a recipient's timeline in the admin (orchestrator.selectors), each called as
    # fn(recipient=, since=, until=, limit=) -> [TimelineEntry].
    "TIMELINE_EXTRAS": ["journeys.selectors.recipient_journey_timeline"],
    # Campaigns: recipients per batch (one pipeline call, one transaction), and how long one task sends
    # before handing the rest to a new one (keep it below Q_CLUSTER["timeout"]).
    "CAMPAIGN_BATCH_SIZE": int(os.environ.get("CAMPAIGN_BATCH_SIZE", "1000")),
    "CAMPAIGN_TASK_TIME_BUDGET_SECONDS": float(os.environ.get("CAMPAIGN_TASK_TIME_BUDGET_SECONDS", "25")),
    # Tasks started at once for a campaign's start: they share its batches, one worker each (at most the
    # cluster's workers are useful).
    "CAMPAIGN_TASKS": int(os.environ.get("CAMPAIGN_TASKS", os.environ.get("Q_WORKERS", "2"))),
    # How often the django-q2 schedule runs the due-work pass.
    "DUE_WORK_EVERY_MINUTES": 1,
    # Schemes an action_url may use besides http and https (docs/limits.md).
    "APP_URL_SCHEMES": env_list("APP_URL_SCHEMES", "app"),
    # Separation of duties: nobody but a superuser approves their own proposal. A one-person team may
    # relax it (ORCHESTRATOR_SELF_APPROVAL=true); off by default.
    "SELF_APPROVAL": env_bool("ORCHESTRATOR_SELF_APPROVAL", False),
    # How far back the review page's forecast replays real history.
    "FORECAST_DAYS": int(os.environ.get("ORCHESTRATOR_FORECAST_DAYS", "14")),
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
    # Every line carries the request id (the one a 500 body names), "-" outside a request.
    "filters": {"request_id": {"()": "orchestrator.api.request_id.RequestIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] %(message)s"}
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["request_id"], "formatter": "plain"}
    },
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
    # A claim covers one provider call: with no result after this long the worker is presumed lost and
    # the sweeper re-drives the message (the provider's idempotency key makes a repeat a no-op where the
    # provider has one). Sized to the provider timeouts below (10 s) with room to spare; a worker working
    # through a chunk renews the lease of the claims still ahead of it (a heartbeat).
    "DELIVERY_LEASE": timedelta(seconds=float(os.environ.get("CHANNEL_DELIVERY_LEASE_SECONDS", "30"))),
    # The sweeper re-drives an accepted message whose first task has not run after this long.
    "REDRIVE_AFTER": timedelta(seconds=float(os.environ.get("CHANNEL_REDRIVE_AFTER_SECONDS", "30"))),
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
    # Apple Push Notification service, HTTP/2 with token auth (channels_app.backends.apns.ApnsBackend): the
    # .p8 auth key (its PEM text or its path), its key id, the team id and the app's bundle id (the topic).
    # BASE_URL overrides the host (tests, a proxy); else USE_SANDBOX picks Apple's development host.
    "APNS": {
        "KEY": os.environ.get("APNS_KEY", ""),
        "KEY_ID": os.environ.get("APNS_KEY_ID", ""),
        "TEAM_ID": os.environ.get("APNS_TEAM_ID", ""),
        "TOPIC": os.environ.get("APNS_TOPIC", ""),
        "USE_SANDBOX": env_bool("APNS_USE_SANDBOX", False),
        "BASE_URL": os.environ.get("APNS_BASE_URL", ""),
        "TIMEOUT": float(os.environ.get("APNS_TIMEOUT", "10")),
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

# Delivery workers (issue 10b, docs/deployment.md "Delivery workers"): the accepted messages are the queue.
# A drain claims CLAIM_BATCH due messages per statement (SKIP LOCKED) and keeps up to DELIVERY_THREADS
# provider calls in flight; a burst of sends enqueues one wake-up while WAKE_TTL has not passed. Per
# provider (or per channel) limits, per worker process: CHANNEL_<X>_CONCURRENCY calls in flight and
# CHANNEL_<X>_RATE_PER_SECOND calls a second (token bucket), X = EMAIL, SMS, PUSH, IN_APP.
CHANNELS.update(
    {
        "DELIVERY_THREADS": int(os.environ.get("CHANNEL_DELIVERY_THREADS", "64")),
        "CLAIM_BATCH": int(os.environ.get("CHANNEL_CLAIM_BATCH", "500")),
        "WAKE_TTL": timedelta(seconds=float(os.environ.get("CHANNEL_WAKE_TTL_SECONDS", "15"))),
        "LIMITS": {
            channel: {
                "CONCURRENCY": int(os.environ.get(f"CHANNEL_{channel.upper()}_CONCURRENCY", "0")) or None,
                "RATE_PER_SECOND": float(os.environ.get(f"CHANNEL_{channel.upper()}_RATE_PER_SECOND", "0"))
                or None,
            }
            for channel in ("email", "sms", "push", "in_app")
        },
    }
)
