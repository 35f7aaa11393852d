from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    verbose_name = "Conversation"

    def ready(self) -> None:
        from .api import strict

        strict.install()
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import update_last_login
        from django.contrib.auth.signals import user_logged_in
        from simple_history.signals import pre_create_historical_record

        from .audit import commands_audited, history_source_fill

        pre_create_historical_record.connect(history_source_fill, dispatch_uid="orchestrator-audit-source")
        commands_audited()

        # A login is not a change to audit: record last_login without a history row.
        def last_login_update(sender, user, **kwargs):
            user.skip_history_when_saving = True
            try:
                update_last_login(sender, user, **kwargs)
            finally:
                del user.skip_history_when_saving

        user_logged_in.disconnect(update_last_login, dispatch_uid="update_last_login")
        user_logged_in.connect(last_login_update, dispatch_uid="orchestrator-update-last-login")
        get_user_model()  # the user model's history is registered by orchestrator.models
