"""API routes owned by this module (filled in by its issue)."""

urlpatterns: list = []
