from django.apps import AppConfig


class GovernorConfig(AppConfig):
    name = "governor"
    verbose_name = "Governor"

    def ready(self) -> None:
        from orchestrator.snapshot import snapshot_part_register

        from .models import CapRule, ChannelPause, GlobalHoldout, QuietHours
        from .policy import SNAPSHOT_PART, policy_load

        # Every edit of these bumps the settings version: each process sees it at its next request.
        snapshot_part_register(
            name=SNAPSHOT_PART, loader=policy_load, models=(CapRule, QuietHours, ChannelPause, GlobalHoldout)
        )
