"""/api/v1/: each app contributes its own routes; the conversation's live here."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from .views import EventCreateView, RecipientViewSet

router = DefaultRouter(trailing_slash=True)
router.register("recipients", RecipientViewSet, basename="recipient")

urlpatterns = [
    path("events/", EventCreateView.as_view(), name="event-create"),
    path("", include("orchestrator.api.messages")),
    path("", include("orchestrator.api.inbound")),
    path("", include("governor.api")),
    path("", include("channels_app.api")),
    path("", include("journeys.api")),
    path("", include(router.urls)),
]
