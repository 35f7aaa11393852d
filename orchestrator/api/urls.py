"""/api/v1/: each app contributes its own routes; the conversation's live here."""

from django.urls import include, path
from rest_framework.routers import APIRootView, DefaultRouter

from .permissions import ANY_CALLER
from .views import EventCreateView, RecipientViewSet


class IndexView(APIRootView):
    """GET /api/v1/: the index of every resource, for any authenticated caller."""

    required = {"GET": ANY_CALLER}


class Router(DefaultRouter):
    APIRootView = IndexView


router = Router(trailing_slash=True)
router.register("recipients", RecipientViewSet, basename="recipient")

urlpatterns = [
    path("events/", EventCreateView.as_view(), name="event-create"),
    path("", include("orchestrator.api.messages")),
    path("", include("orchestrator.api.segments")),
    path("", include("orchestrator.api.inbound")),
    path("", include("governor.api")),
    path("", include("channels_app.api")),
    path("", include("journeys.api")),
    path("", include(router.urls)),
]
