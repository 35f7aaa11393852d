"""The admin pages a newcomer meets (every changelist and one change page of each project model, the
governor overview, the content check, the journey pages) and the in-page check the browser test runs on
each: badge contrast, horizontal overflow."""

from __future__ import annotations

from collections.abc import Iterator

from django.contrib import admin
from django.urls import NoReverseMatch, reverse

from orchestrator.admin import PageAdmin

PROJECT_APPS = ("orchestrator", "governor", "channels_app", "journeys")

# Per badge: its text colour and the first opaque background behind it (the badge's own, or an ancestor's),
# and the WCAG 2 contrast ratio between them. Also whether the page scrolls sideways.
PAGE_CHECK_JS = r"""
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return [0, 0, 0, 1];
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0.5) return bg;
    }
    return [255, 255, 255, 1];
  };
  const badges = [];
  for (const el of document.querySelectorAll(".orch-badge")) {
    if (!el.getClientRects().length) continue;  // not rendered (a closed <details>, a hidden tab)
    const fg = parse(getComputedStyle(el).color), bg = background(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    badges.push({text: el.textContent.trim().slice(0, 40), color: getComputedStyle(el).color,
                 background: getComputedStyle(el).backgroundColor,
                 ratio: Math.round(((a + 0.05) / (b + 0.05)) * 100) / 100});
  }
  const root = document.documentElement;
  // Django's changelist scrolls its table inside `.results`: a column cut there is an overflow too.
  const inner = [...document.querySelectorAll("#changelist .results, .orch-timeline")]
    .filter((el) => el.scrollWidth > el.clientWidth + 1)
    .map((el) => `${el.className}: ${el.scrollWidth} > ${el.clientWidth}`);
  return {badges, scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, inner,
          overflow: root.scrollWidth > root.clientWidth || inner.length > 0,
          serverError: document.title.includes("Server Error")};
}
"""


def _url(name: str, *args) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


class _Request:
    """Enough of a request for get_queryset as a superuser (the pages are visited as the demo's admin)."""

    class user:  # noqa: N801
        is_active = is_staff = is_superuser = is_authenticated = True

        @staticmethod
        def has_perm(perm, obj=None):
            return True

        @staticmethod
        def get_username():
            return "admin"

    GET: dict = {}


def admin_pages() -> Iterator[tuple[str, str]]:
    """(name, url) of every page to visit, in a stable order."""
    from journeys.models import Journey, JourneyStatus

    yield "index", reverse("admin:index")
    registry = sorted(
        admin.site._registry.items(), key=lambda kv: (kv[0]._meta.app_label, kv[0]._meta.model_name)
    )
    for model, model_admin in registry:
        opts = model._meta
        if opts.app_label not in PROJECT_APPS:
            continue
        base = f"admin:{opts.app_label}_{opts.model_name}"
        changelist = _url(f"{base}_changelist")
        if changelist is None:
            continue
        yield f"{opts.app_label}-{opts.model_name}-list", changelist
        if isinstance(model_admin, PageAdmin):
            continue  # a page on a proxy: its list is the page, there is no object to change
        obj = model_admin.get_queryset(_Request()).order_by("pk").first()
        if obj is not None:
            yield f"{opts.app_label}-{opts.model_name}-change", reverse(f"{base}_change", args=[obj.pk])
    yield (
        "content-check",
        reverse("admin:channels_app_channelpolicy_lint")
        + "?channel=push&purpose=engagement&title=Hi&body=Your+cart+is+saved.",
    )
    for status, view in (
        (JourneyStatus.ACTIVE, "change"),
        (JourneyStatus.PROPOSED, "review"),
        (JourneyStatus.DRAFT, "builder"),
    ):
        journey = Journey.objects.filter(status=status).order_by("pk").first()
        if journey is not None:
            yield f"journey-{status}-{view}", reverse(f"admin:journeys_journey_{view}", args=[journey.pk])
    yield "journey-new-builder", reverse("admin:journeys_journey_add")
    active = Journey.objects.filter(status=JourneyStatus.ACTIVE).order_by("pk").first()
    if active is not None:
        yield "journey-report", reverse("admin:journeys_report_changelist") + f"?journey={active.slug}"
