from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from orchestrator.api.errors import api_not_found

from .control_room import control_room_install
from .health import healthz, readyz

admin.site.site_header = "Orchestrator"
admin.site.site_title = "Orchestrator"
admin.site.index_title = "One conversation with each recipient"
# The app list lives on the home page and in the breadcrumbs; as a sidebar it took a quarter of every list's
# width at 1400 px and cut the Messages list's columns.
admin.site.enable_nav_sidebar = False

control_room_install(admin.site)

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("orchestrator.api.urls")),
    path("preferences/", include("orchestrator.preference_centre")),
    path("anymail/", include("channels_app.anymail_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Last: any other /api/ path answers a JSON 404, whatever DEBUG says.
    re_path(r"^api/", api_not_found),
]
