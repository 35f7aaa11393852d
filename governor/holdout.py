"""Holdouts: a random, stable share of recipients kept out of something, to measure its true lift.

Assignment is a pure function of (scope, recipient id): the first 32 bits of an MD5 of `scope:id` read
as a fraction in [0, 1), held out when below the share. The same recipient is always in or out of the
same scope (stable across re-entry and processes), scopes are independent of each other (`global`,
`journey:<id>`), and a report can apply the very same test in SQL (`holdout_sql`) on PostgreSQL and on
SQLite (Django registers MD5 there), comparing 8 hex digits as text.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

MAX_SHARE = Decimal("0.5")  # more than half held out would no longer be a holdout
GLOBAL_SCOPE = "global"


def holdout_threshold(share: Decimal | float | int) -> str:
    """The 8-hex-digit bound: a recipient whose digest prefix sorts below it is held out."""
    bound = math.ceil(Decimal(str(share)) * 2**32)
    return f"{max(0, min(bound, 2**32 - 1)):08x}"


def holdout_digest(*, scope: str, recipient_id: int) -> str:
    return hashlib.md5(f"{scope}:{recipient_id}".encode(), usedforsecurity=False).hexdigest()[:8]


def holdout_assigned(*, scope: str, recipient_id: int, share: Decimal | float | int) -> bool:
    """Is this recipient in the holdout of `scope` at this share? Deterministic; share 0 holds no one."""
    if not share or Decimal(str(share)) <= 0:
        return False
    return holdout_digest(scope=scope, recipient_id=recipient_id) < holdout_threshold(share)


def holdout_sql(*, scope: str, recipient_column: str, share: Decimal | float | int) -> tuple[str, list]:
    """The same test as a SQL boolean over `recipient_column` (PostgreSQL and SQLite alike)."""
    return (
        f"(substr(md5(%s || CAST({recipient_column} AS TEXT)), 1, 8) < %s)",
        [f"{scope}:", holdout_threshold(share)],
    )
