from django.apps import AppConfig


class ChannelsAppConfig(AppConfig):
    name = "channels_app"
    verbose_name = "Channels"

    def ready(self) -> None:
        from orchestrator.snapshot import snapshot_part_register

        from . import receivers  # noqa: F401 - connects the signal receivers
        from .lint import SNAPSHOT_PART, channel_policy_views_load
        from .models import ChannelPolicy

        # Every edit of a channel policy bumps the settings version: each process sees it at its next request.
        snapshot_part_register(name=SNAPSHOT_PART, loader=channel_policy_views_load, models=(ChannelPolicy,))
