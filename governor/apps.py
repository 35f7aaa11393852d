from django.apps import AppConfig


class GovernorConfig(AppConfig):
    name = "governor"
    verbose_name = "Governor"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from .models import CapRule, ChannelPause, GlobalHoldout, QuietHours
        from .policy import policy_cache_clear

        # A local edit is seen at once; other processes see it within policy.POLICY_TTL seconds.
        for model in (CapRule, QuietHours, ChannelPause, GlobalHoldout):
            post_save.connect(
                policy_cache_clear, sender=model, dispatch_uid=f"governor-policy-{model.__name__}"
            )
            post_delete.connect(
                policy_cache_clear, sender=model, dispatch_uid=f"governor-policy-del-{model.__name__}"
            )
