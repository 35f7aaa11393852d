"""/api/v1/: each app contributes its own routes; the conversation's live here."""

from django.urls import NoReverseMatch, include, path
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.routers import APIRootView, DefaultRouter

from .permissions import ANY_CALLER
from .views import EventCreateView, RecipientViewSet

# Every resource a caller starts from (collections and actions without a path parameter), by URL name.
RESOURCES = {
    "recipients": "recipient-list",
    "messages": "message-create",
    "messages-record": "message-record",
    "events": "event-create",
    "governor-check": "governor-check",
    "cap-rules": "cap-rule-list",
    "quiet-hours": "quiet-hours-list",
    "channel-pauses": "channel-pause-list",
    "journeys": "journey-list",
    "segments": "segment-list",
    "segment-preview": "segment-draft-preview",
    "templates": "template-list",
    "campaigns": "campaign-list",
    "reports-attribution": "report-attribution",
}


class IndexView(APIRootView):
    """GET /api/v1/: the index of every resource, for any authenticated caller."""

    required = {"GET": ANY_CALLER}

    def get(self, request, *args, **kwargs):
        index = {}
        for name, url_name in RESOURCES.items():
            try:
                index[name] = reverse(url_name, request=request, format=kwargs.get("format"))
            except NoReverseMatch:
                continue  # a resource of an app this install does not serve
        index["schema"] = reverse("schema", request=request)
        index["docs"] = reverse("api-docs", request=request)
        return Response(index)


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
