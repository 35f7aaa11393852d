from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    verbose_name = "Conversation"

    def ready(self) -> None:
        from .api import strict

        strict.install()
