from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

admin.site.site_header = "Orchestrator"
admin.site.site_title = "Orchestrator"
admin.site.index_title = "One conversation with each recipient"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("orchestrator.api.urls")),
    path("preferences/", include("orchestrator.preference_centre")),
    path("anymail/", include("channels_app.anymail_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
