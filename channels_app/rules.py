"""Object rules for channels (django-rules autodiscovers this module): a policy belongs to its channel."""

from orchestrator.authority import channel_rules_register

channel_rules_register("channels_app.channelpolicy")
