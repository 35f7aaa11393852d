"""The roles (Django groups) and the model permissions each starts with. Installed by data migrations;
the team edits them in the admin afterwards (Authentication and authorization › Groups).

`roles_install` only adds: it never takes away a permission someone granted in the admin, so a later
migration can call it again when a new model (campaigns) brings new permissions.
"""

from __future__ import annotations

from .authority import CHANNEL_OWNER, MESSAGING_TEAM, SERVICE

GOVERNOR_MODELS = ("caprule", "quiethours", "channelpause")
TEAM_JOURNEY_ACTIONS = (
    "view",
    "add",
    "change",
    "propose",
    "approve",
    "reject",
    "activate",
    "pause",
    "archive",
)
TEAM_JOURNEY_ACTIONS += ("revise",)
CAMPAIGN_ACTIONS = ("view", "add", "change", "delete", "propose", "approve", "reject", "cancel")

ROLE_PERMISSIONS: dict[str, list[str]] = {
    MESSAGING_TEAM: [
        "orchestrator.act_on_all_channels",
        *(f"governor.{a}_{m}" for m in GOVERNOR_MODELS for a in ("view", "add", "change", "delete")),
        "governor.view_governoroverview",
        "channels_app.view_channelpolicy",
        "channels_app.change_channelpolicy",
        "channels_app.view_deliveryattempt",
        "channels_app.view_deadletter",
        "channels_app.change_deadletter",
        *(f"journeys.{a}_journey" for a in TEAM_JOURNEY_ACTIONS),
        "journeys.view_report_journey",
        "journeys.view_journeyversion",
        "journeys.view_enrollment",
        "journeys.add_enrollment",
        "orchestrator.view_recipient",
        "orchestrator.add_recipient",
        "orchestrator.change_recipient",
        "orchestrator.inbox_recipient",
        "orchestrator.erase_recipient",
        "orchestrator.view_erasure",
        "orchestrator.view_message",
        "orchestrator.send_message",
        "orchestrator.receipt_message",
        "orchestrator.view_event",
        "orchestrator.add_event",
        "orchestrator.view_servicetoken",
        "orchestrator.add_servicetoken",
        "orchestrator.change_servicetoken",
        "orchestrator.view_channelownership",
        # Consent and deliverability (every report, and the team's hands on suppressions).
        "orchestrator.view_contactpoint",
        "orchestrator.change_contactpoint",
        "orchestrator.view_preferencechange",
        "orchestrator.view_permissionburn",
        "orchestrator.view_messagedecision",
        "governor.view_globalholdout",
        "governor.change_globalholdout",
        "channels_app.view_providercircuit",
        # Measurement: conversions and reports.
        "journeys.view_conversiondefinition",
        "journeys.add_conversiondefinition",
        "journeys.change_conversiondefinition",
        "journeys.view_report",
        "journeys.view_steprun",
        # Campaigns, their audiences and their templates.
        *(f"journeys.{a}_campaign" for a in CAMPAIGN_ACTIONS),
        *(f"orchestrator.{a}_segment" for a in ("view", "add", "change", "delete")),
        *(f"channels_app.{a}_messagetemplate" for a in ("view", "add", "change", "delete")),
    ],
    CHANNEL_OWNER: [
        "journeys.view_journey",
        "journeys.add_journey",
        "journeys.change_journey",
        "journeys.propose_journey",
        "journeys.view_report_journey",
        "journeys.view_journeyversion",
        "governor.view_caprule",
        "governor.view_quiethours",
        "governor.view_channelpause",
        "channels_app.view_channelpolicy",
        # Campaigns on their channels: write, test and propose; audiences and templates to build them.
        *(f"journeys.{a}_campaign" for a in ("view", "add", "change", "propose")),
        "orchestrator.view_segment",
        *(f"channels_app.{a}_messagetemplate" for a in ("view", "add", "change")),
    ],
    # The account a service token acts as: the data plane, no governance.
    SERVICE: [
        "orchestrator.act_on_all_channels",
        "orchestrator.view_recipient",
        "orchestrator.add_recipient",
        "orchestrator.change_recipient",
        "orchestrator.inbox_recipient",
        "orchestrator.erase_recipient",
        "orchestrator.view_message",
        "orchestrator.send_message",
        "orchestrator.receipt_message",
        "orchestrator.add_event",
        "journeys.view_journey",
        "journeys.add_enrollment",
        "governor.view_caprule",
        "governor.view_quiethours",
        "governor.view_channelpause",
    ],
}


def roles_install(apps, schema_editor=None) -> None:
    """Create the groups and grant them their starting permissions (idempotent, additive)."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role)
        wanted = {tuple(p.split(".", 1)) for p in perms}
        found = [
            p
            for p in permission_model.objects.filter(codename__in={c for _, c in wanted}).select_related(
                "content_type"
            )
            if (p.content_type.app_label, p.codename) in wanted
        ]
        group.permissions.add(*found)
