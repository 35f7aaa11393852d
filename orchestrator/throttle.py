"""Admin login throttling (django-axes), for logins made over the web."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class WebLoginThrottleBackend(AxesStandaloneBackend):
    """Counts and refuses web logins like django-axes; an authenticate() without a request (a script, a
    test client's login()) is no web login, so there is nothing to throttle and nothing to refuse."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
