"""Authority: who may do what, on which object. The one place the API, the admin and the services ask.

Roles are Django groups carrying model permissions (editable in the admin): the *Messaging team* holds
the governor, every channel and every approval; a *Channel owner* drafts and proposes journeys (and
campaigns) whose sends use only the channels they are bound to (`ChannelOwnership`). On top of the
model permissions, object-level rules (django-rules predicates, registered per model) add:

- channels: a person without `act_on_all_channels` acts only on objects whose channels they all own;
- separation of duties: nobody approves a proposal they made (superusers excepted), unless
  `ORCHESTRATOR["SELF_APPROVAL"]` is true (a one-person team).

Why django-rules rather than a permission backend of our own or django-guardian: the object rules are
pure predicates over (user, object) derived from the role and the channel binding, so no per-object grant
rows exist to keep in sync (guardian's model); rules plugs into `user.has_perm(perm, obj)` as a backend,
so the admin (`ObjectPermissionsModelAdmin`), DRF and our services share the same answer, and the
predicates compose and test like functions.

A *proposal* is anything with a proposer and the channels it uses: `proposed_by_id`, `created_by_id`
and `proposal_channels()`. `proposal_rules_register("app.model")` gives such a model the whole set of
lifecycle rules in one line (journeys today, campaigns next).

Services take the acting `user`; `None` means the system itself (management commands, the scheduler,
the demo), which acts with full authority. The API and the admin always pass the person or token's
account.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import rules
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from .models import Channel, ChannelOwnership

ALL_CHANNELS_PERM = "orchestrator.act_on_all_channels"
PROPOSAL_ACTIONS = ("view", "add", "change", "delete", "propose", "approve", "reject", "activate", "pause")
PROPOSAL_ACTIONS += ("archive", "revise", "cancel")
MESSAGING_TEAM = "Messaging team"
CHANNEL_OWNER = "Channel owner"
SERVICE = "Service"


class Denied(PermissionDenied):
    """403 with a code and a plain reason naming what is missing (the API answers {code, detail})."""

    def __init__(self, code: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.code, self.detail, self.extra = code, detail, extra


# ---- facts about a user ---------------------------------------------------------------------------


def _role_permissions(user_ref):
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    return Permission.objects.filter(Q(user=user_ref) | Q(group__user=user_ref))


def _permission_names(permissions):
    from django.db.models import CharField, Value
    from django.db.models.functions import Concat

    return permissions.annotate(
        perm_name=Concat("content_type__app_label", Value("."), "codename", output_field=CharField())
    ).values_list("perm_name", flat=True)


@lru_cache(maxsize=1)
def role_permissions_subquery():
    """The `user_id` account's direct and group permissions ("app.codename") as an array subquery
    (PostgreSQL), for a statement that loads the account anyway (the API's token lookup). Built once: the
    ORM copies an expression when a query resolves it."""
    from django.contrib.postgres.expressions import ArraySubquery
    from django.db.models import OuterRef

    return ArraySubquery(_permission_names(_role_permissions(OuterRef("user_id"))).distinct())


class RoleBackend(ModelBackend):
    """Django's ModelBackend, reading a user's direct and group permissions in ONE query (it takes two):
    every API call asks for them once."""

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            from django.contrib.auth.models import Permission

            found = Permission.objects.all() if user_obj.is_superuser else _role_permissions(user_obj)
            user_obj._perm_cache = set(_permission_names(found).distinct())
        return user_obj._perm_cache


def model_perm_has(user, perm: str) -> bool:
    """The role's model permission only (groups and direct grants; superusers have all)."""
    if user is None or not getattr(user, "is_active", False):
        return False
    if user.is_superuser:
        return True
    cache = getattr(user, "_orch_model_perms", None)
    if cache is None:
        cache = RoleBackend().get_all_permissions(user)
        user._orch_model_perms = cache
    return perm in cache


def user_channels(user) -> frozenset[str] | None:
    """The channels a user may act on: None means every channel (the messaging team, superusers)."""
    if user is None:
        return None
    if model_perm_has(user, ALL_CHANNELS_PERM):
        return None
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_orch_channels", None)
    if cached is None:
        channels = ChannelOwnership.objects.filter(user=user).values_list("channels", flat=True).first()
        cached = user._orch_channels = frozenset(channels or ())
    return cached


def channels_text(channels: Iterable[str]) -> str:
    return ", ".join(sorted(channels, key=lambda c: Channel.values.index(c) if c in Channel.values else 9))


def roles_holding(perm: str) -> list[str]:
    """The groups (roles) that carry a model permission, to name them in a refusal."""
    from django.contrib.auth.models import Group

    app_label, codename = perm.split(".", 1)
    return sorted(
        Group.objects.filter(
            permissions__codename=codename, permissions__content_type__app_label=app_label
        ).values_list("name", flat=True)
    )


# ---- predicates -----------------------------------------------------------------------------------


def model_perm(perm: str) -> rules.Predicate:
    return rules.predicate(lambda user: model_perm_has(user, perm), name=f"has {perm}")


@rules.predicate
def channels_owned(user, obj) -> bool:
    """The object's channels are all the user's (objects without channels: anyone with the role)."""
    if obj is None:
        return True
    allowed = user_channels(user)
    return allowed is None or object_channels(obj) <= allowed


@rules.predicate
def is_proposer(user, obj) -> bool:
    proposer = getattr(obj, "proposed_by_id", None) if obj is not None else None
    return proposer is not None and proposer == getattr(user, "pk", None)


@rules.predicate
def is_author(user, obj) -> bool:
    if obj is None or getattr(user, "pk", None) is None:
        return False
    return user.pk in (getattr(obj, "created_by_id", None), getattr(obj, "proposed_by_id", None))


@rules.predicate
def self_approval_allowed() -> bool:
    return bool(getattr(settings, "ORCHESTRATOR", {}).get("SELF_APPROVAL", False))


def object_channels(obj) -> frozenset[str]:
    """`proposal_channels()` for proposals, `channel` for one-channel objects (a channel policy)."""
    if hasattr(obj, "proposal_channels"):
        return frozenset(obj.proposal_channels())
    channel = getattr(obj, "channel", None)
    return frozenset([channel]) if channel else frozenset()


def proposal_rules_register(label: str) -> None:
    """Object rules for a proposal model ("app_label.modelname"): viewing needs the role and either the
    channels or authorship; every other action needs the role and the channels; approving also needs
    someone other than the proposer (unless SELF_APPROVAL)."""
    app_label, model_name = label.split(".")
    for action in PROPOSAL_ACTIONS:
        perm = f"{app_label}.{action}_{model_name}"
        predicate = model_perm(perm)
        if action == "view":
            predicate &= channels_owned | is_author
        else:
            predicate &= channels_owned
        if action == "approve":
            predicate &= ~is_proposer | self_approval_allowed
        rules.set_perm(perm, predicate)


def channel_rules_register(label: str, actions: Iterable[str] = ("change", "delete")) -> None:
    """Object rules for a per-channel model: the role and the object's channel."""
    app_label, model_name = label.split(".")
    for action in actions:
        perm = f"{app_label}.{action}_{model_name}"
        rules.set_perm(perm, model_perm(perm) & channels_owned)


# ---- asking ---------------------------------------------------------------------------------------


def allowed(user, perm: str, obj: Any = None) -> bool:
    """May `user` do `perm` (on `obj`)? None is the system: always."""
    if user is None:
        return True
    if obj is not None and not rules.perm_exists(perm):
        obj = None  # no object rule for this permission: the role decides
    return user.has_perm(perm, obj)


def _perm_label(perm: str) -> str:
    from django.contrib.auth.models import Permission

    app_label, codename = perm.split(".", 1)
    name = (
        Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        .values_list("name", flat=True)
        .first()
    )
    return name or perm


def explain(user, perm: str, obj: Any = None) -> Denied:
    """Why `user` may not do `perm` on `obj`: the missing permission (and which roles carry it), the
    channels they do not own, or separation of duties."""
    who = user.get_username() if getattr(user, "is_authenticated", False) else "An anonymous caller"
    if not model_perm_has(user, perm):
        holders = roles_holding(perm)
        held = f" (the {' or '.join(holders)} role)" if holders else ""
        return Denied(
            "missing_permission",
            f"{who} may not do this: it needs the permission “{_perm_label(perm)}”{held}.",
            permission=perm,
        )
    if obj is not None:
        allowed_channels = user_channels(user)
        needed = object_channels(obj)
        if allowed_channels is not None and not needed <= allowed_channels:
            owned = channels_text(allowed_channels) or "none"
            return Denied(
                "channel_not_owned",
                f"{obj} uses {channels_text(needed - allowed_channels)}, which {who} does not own "
                f"(owned: {owned}); the messaging team acts on every channel.",
                channels=sorted(needed - allowed_channels),
            )
        if perm.split(".", 1)[1].startswith("approve_") and is_proposer(user, obj):
            return Denied(
                "separation_of_duties",
                f"{who} proposed {obj}: someone else in the messaging team must approve it "
                "(separation of duties).",
            )
    return Denied("permission_denied", f"{who} may not do this.")


def authorize(user, perm: str, obj: Any = None) -> None:
    """Raise Denied (a PermissionDenied) unless `user` may do `perm` on `obj`."""
    if not allowed(user, perm, obj):
        raise explain(user, perm, obj)
