"""Channel delivery records."""

from django.db import models
from django.utils import timezone

from orchestrator.models import Message


class AttemptOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    TRANSIENT = "transient", "Transient error (will retry)"
    PERMANENT = "permanent", "Permanent error"


class DeliveryAttempt(models.Model):
    """One hand-off of a message to its provider: when, how it went, what the provider said."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="delivery_attempts")
    number = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=100)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=AttemptOutcome.choices)
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    response = models.TextField(blank=True, default="", help_text="Provider response summary.")

    class Meta:
        ordering = ["message", "number"]
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="deliveryattempt_unique_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of message {self.message_id}: {self.outcome}"
