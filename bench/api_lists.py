"""GET messages/ and GET recipients/ paged by cursor over 1M+ messages: the first page, a page a million
rows deep (the cost must not grow with depth), a filtered page, and the erasure of one person.

Builds (once) 50k recipients with ~1.2M messages (the history bench's shape, its own database), then
calls the views in-process (APIRequestFactory: no HTTP, the view, filters, paginator and serializer).
"""

from __future__ import annotations

import random
import time

from _common import django_setup, percentiles

RECIPIENTS = 50_000
MESSAGES = 1_200_000
CALLS = 60


def populate(connection) -> None:
    from django.utils import timezone

    now = timezone.now()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM orchestrator_message")
        if cur.fetchone()[0] >= MESSAGES:
            return
        print(f"building {RECIPIENTS:,} recipients and {MESSAGES:,} messages (once)...", flush=True)
        cur.execute("TRUNCATE orchestrator_message, orchestrator_recipient RESTART IDENTITY CASCADE")
        cur.execute(
            """
            INSERT INTO orchestrator_recipient
              (external_id, timezone, locale, attributes, created_at, updated_at)
            SELECT 'bench-' || g, 'UTC', 'en', jsonb_build_object('plan', (ARRAY['free','pro'])[1 + g %% 2]),
                   %s - g * interval '1 second', %s
              FROM generate_series(1, %s) g
            """,
            [now, now, RECIPIENTS],
        )
        cur.execute(
            """
            INSERT INTO orchestrator_message
              (recipient_id, channel, requested_channel, channel_reason, purpose, priority, content,
               status, rule, reason, warnings, source, source_ref, source_system, external_id, to_address,
               provider,
               provider_message_id, attempts, last_error, created_at, decided_at, accepted_at, updated_at)
            SELECT 1 + (g %% %(r)s),
                   (ARRAY['email','push','sms','in_app'])[1 + g %% 4], '', '', 'engagement', 50,
                   '{"subject": "Hello", "body": "A message."}'::jsonb, 'delivered', '', '', '[]'::jsonb,
                   'api', '', '', '', '', 'locmem', '', 1, '',
                   t, t, t, t
            FROM (SELECT g, %(now)s::timestamptz - (random() * interval '30 days') AS t
                  FROM generate_series(1, %(n)s) g) s
            """,
            {"r": RECIPIENTS, "n": MESSAGES, "now": now},
        )
        cur.execute("ANALYZE orchestrator_message")
        cur.execute("ANALYZE orchestrator_recipient")


def timed(view, factory, user, url: str) -> tuple[float, dict]:
    from rest_framework.test import force_authenticate

    request = factory.get(url)
    force_authenticate(request, user=user)
    t0 = time.perf_counter()
    response = view(request)
    response.render()
    elapsed = time.perf_counter() - t0
    assert response.status_code == 200, response.content[:300]
    return elapsed, response.data


def main() -> None:
    django_setup("lists")
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIRequestFactory

    from orchestrator.api.lists import KeysetCursorPagination
    from orchestrator.api.messages import MessageCreateView
    from orchestrator.api.views import RecipientViewSet
    from orchestrator.erasure import recipient_erase
    from orchestrator.models import Message, Recipient

    populate(connection)
    total = Message.objects.count()
    user = get_user_model().objects.filter(username="bench").first()
    if user is None:
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pass-1")
    factory = APIRequestFactory()
    messages = MessageCreateView.as_view()
    recipients = RecipientViewSet.as_view({"get": "list"})

    deep_row = Message.objects.order_by("-created_at", "-id")[1_000_000]
    deep = KeysetCursorPagination.encode_position(deep_row, reverse=False)
    cases = {
        "messages first page (100)": (messages, "/api/v1/messages/"),
        "messages 1,000,000 rows deep (100)": (messages, f"/api/v1/messages/?cursor={deep}"),
        "messages channel=push, 1M deep (100)": (messages, f"/api/v1/messages/?channel=push&cursor={deep}"),
        "messages first page (1000)": (messages, "/api/v1/messages/?page_size=1000"),
        "recipients attribute=plan:pro (100)": (recipients, "/api/v1/recipients/?attribute=plan:pro"),
    }
    print(f"{total:,} messages, {Recipient.objects.count():,} recipients")
    for name, (view, url) in cases.items():
        samples = [timed(view, factory, user, url)[0] for _ in range(CALLS)]
        p = percentiles(samples)
        print(f"{name:40s} p50 {p['p50_ms']:7.1f} ms   p99 {p['p99_ms']:7.1f} ms")

    # Walk 20 pages of 1000 from the top: each page costs the same.
    url, pages = "/api/v1/messages/?page_size=1000", []
    for _ in range(20):
        elapsed, data = timed(messages, factory, user, url)
        pages.append(elapsed)
        url = data["next"].split("testserver", 1)[1]
    print(f"walk 20 pages of 1000: first {pages[0] * 1000:.1f} ms, last {pages[-1] * 1000:.1f} ms")

    rng = random.Random(7)
    erased = []
    while len(erased) < 20:
        # Each run erases 20 more (a re-run finds the earlier ones erased and picks others).
        who = Recipient.objects.filter(pk=rng.randint(1, RECIPIENTS), erased_at__isnull=True).first()
        if who is None:
            continue
        n = Message.objects.filter(recipient=who).count()
        t0 = time.perf_counter()
        recipient_erase(recipient=who, at=timezone.now())
        erased.append((time.perf_counter() - t0, n))
    p = percentiles([e for e, _ in erased])
    mean_n = sum(n for _, n in erased) / max(1, len(erased))
    print(
        f"erase one person (~{mean_n:.0f} messages each)"
        f"  p50 {p['p50_ms']:7.1f} ms   p99 {p['p99_ms']:7.1f} ms"
    )


if __name__ == "__main__":
    main()
