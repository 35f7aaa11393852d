"""Object rules for journeys (django-rules autodiscovers this module): the proposal lifecycle."""

import rules

from orchestrator.authority import channels_owned, is_author, model_perm, proposal_rules_register

proposal_rules_register("journeys.journey")
rules.set_perm(
    "journeys.view_report_journey",
    model_perm("journeys.view_report_journey") & (channels_owned | is_author),
)
