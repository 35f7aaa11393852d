"""Object rules for channels (django-rules autodiscovers this module): a policy belongs to its channel."""

from orchestrator.authority import channel_rules_register

channel_rules_register("channels_app.channelpolicy")
# A channel owner writes templates for their own channels only (an `auto` template: the messaging team).
channel_rules_register("channels_app.messagetemplate", actions=("add", "change", "delete"))
