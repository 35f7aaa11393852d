"""The channels' personalities as shipped: installed by migration 0003 and restorable from the admin."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

MARKETING_TERMS = [
    "sale",
    "discount",
    "% off",
    "offer",
    "deal",
    "deals",
    "promo",
    "promo code",
    "coupon",
    "limited time",
    "buy now",
    "shop now",
    "free shipping",
    "clearance",
    "black friday",
    "exclusive",
]

DEFAULT_POLICIES: dict[str, dict[str, Any]] = {
    "push": {
        "job": "Push is urgent: one time-sensitive action, short enough to read on a lock screen",
        "allowed_purposes": [],
        "title_required": True,
        "title_max_chars": 50,
        "body_max_chars": 178,
        "body_max_words": 30,
        "max_actions": 1,
        "default_ttl": timedelta(hours=4),
        "purpose_fit": {"transactional": 7, "alert": 9, "engagement": 7, "promotional": 4},
    },
    "email": {
        "job": "Email is patient: a clear subject, then room for context, depth and a durable reference",
        "allowed_purposes": [],
        "subject_required": True,
        "title_max_chars": 120,
        "purpose_fit": {"transactional": 8, "alert": 6, "engagement": 6, "promotional": 8},
    },
    "in_app": {
        "job": (
            "In-app is contextual: it shows inside the product, on the next visit, next to what it is about"
        ),
        "allowed_purposes": [],
        "context_required": True,
        "product_url_prefixes": ["app://", "/"],
        "title_max_chars": 80,
        "body_max_chars": 500,
        "max_actions": 2,
        "default_ttl": timedelta(days=7),
        "purpose_fit": {"transactional": 4, "alert": 3, "engagement": 6, "promotional": 6},
    },
    "sms": {
        "job": (
            "SMS is intimate: transactional confirmations and rare high-trust alerts, short, never marketing"
        ),
        "allowed_purposes": ["transactional", "alert"],
        "body_max_chars": 320,
        "segment_chars": 160,
        "max_actions": 1,
        "marketing_terms": MARKETING_TERMS,
        "default_ttl": timedelta(hours=24),
        "purpose_fit": {"transactional": 6, "alert": 8, "engagement": 0, "promotional": 0},
    },
}
