"""Recording sends made elsewhere under concurrency, as services and imports meet it: real commits, one
connection per thread, each client reading its own clock.

- Repeats of one external id arriving together record it once (the recipient's lock orders repeats for
  one recipient; the unique constraint and a re-read catch repeats that name different recipients).
- Recorded sends racing the governor for recipients at cap − 1 never let an orchestrated message pass
  the cap: a recording holds the recipient's row lock like every governed write, so each decision counts
  exactly the sends committed before it.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from governor.defaults import DEFAULT_CAP_RULES
from governor.services import governor_check
from orchestrator.models import Message, MessageDecision, MessageStatus, Source
from orchestrator.recording import messages_record_bulk, record_request_parse
from tests.governor.test_race_api import at_cap_minus_one, clients, default_governor  # noqa: F401

from .factories import ReachableRecipientFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DAILY = DEFAULT_CAP_RULES[0]["name"]
EMAIL = {"subject": "A nudge", "body": "Something you may like."}


def iso(t) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record_body(recipient: str, external_id: str, sent_at) -> dict:
    return {
        "recipient": recipient,
        "channel": "email",
        "purpose": "engagement",
        "sent_at": iso(sent_at),
        "source_system": "esp",
        "external_id": external_id,
        "content": {"subject": "Newsletter", "body": "This week."},
    }


def test_concurrent_repeats_of_one_external_id_record_it_once(clients):  # noqa: F811
    people = [ReachableRecipientFactory() for _ in range(2)]
    pool = clients(16)
    for round_ in range(10):
        sent_at = timezone.now() - timedelta(minutes=10)

        def job(client, index, round_=round_, sent_at=sent_at):
            # Most repeats name the same recipient; a few disagree (another recipient, no lock in common).
            who = people[1 if index % 5 == 4 else 0].external_id
            return client.post(
                "/api/v1/messages/record/", record_body(who, f"nl-{round_}", sent_at), format="json"
            )

        responses = pool.round(job)
        codes = Counter(r.status_code for r in responses)
        assert codes == {201: 1, 200: 15}, codes
        assert len({r.json()["id"] for r in responses}) == 1
        assert Message.objects.filter(source=Source.EXTERNAL, external_id=f"nl-{round_}").count() == 1


def test_concurrent_imports_of_overlapping_files_record_each_send_once(tmp_path, clients):  # noqa: F811
    people = [ReachableRecipientFactory() for _ in range(20)]
    now = timezone.now()
    rows = [
        record_body(people[n % 20].external_id, f"e-{n}", now - timedelta(hours=40, minutes=n))
        for n in range(600)
    ]
    files = []
    for k in range(4):  # four exports, each overlapping the next by half
        path = tmp_path / f"export-{k}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[k * 100 : k * 100 + 300]))
        files.append(path)
    pool = clients(4)

    def job(client, index):
        out = StringIO()
        call_command("history_import", str(files[index]), "--batch-size", "50", "--no-progress", stdout=out)
        return out.getvalue()

    outputs = pool.round(job)
    assert all("0 bad" in o for o in outputs), outputs
    recorded = Message.objects.filter(source=Source.EXTERNAL)
    assert recorded.count() == 600
    assert recorded.values("external_id").distinct().count() == 600


def test_concurrent_imports_of_recent_and_old_sends_do_not_deadlock(tmp_path, clients):  # noqa: F811
    """A recipient's sends are recent in one export (its row is locked FOR UPDATE) and years old in
    another (only the foreign key's share lock): the locks are taken in one id-ordered pass, so the
    imports never wait for each other in a circle."""
    people = [ReachableRecipientFactory() for _ in range(30)]
    now = timezone.now()
    files = []
    for k in range(4):
        rows = []
        for n in range(240):
            p = n % 30
            age = timedelta(minutes=30 + n) if (p + k) % 2 else timedelta(days=400, minutes=n)
            rows.append(record_body(people[p].external_id, f"k{k}-{n}", now - age))
        path = tmp_path / f"export-{k}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(path)
    pool = clients(4)

    def job(client, index):
        out = StringIO()
        call_command("history_import", str(files[index]), "--batch-size", "60", "--no-progress", stdout=out)
        return out.getvalue()

    for _ in range(3):
        Message.objects.filter(source=Source.EXTERNAL).delete()
        outputs = pool.round(job)
        assert all("240 recorded" in o for o in outputs), outputs
        assert Message.objects.filter(source=Source.EXTERNAL).count() == 960


def test_recorded_sends_racing_orchestrated_sends_at_cap_minus_one_never_pass_the_cap(clients):  # noqa: F811
    """Per round, four recipients at 2 of their 3 engagement messages: for each, a service records an
    external send through the API and two services send through the pipeline, while an import batch
    records one more external send for all four — each on its own clock, all at once."""
    default_governor()
    pool = clients(13)
    problems = []
    for round_ in range(12):
        people = at_cap_minus_one(4)
        names = [p.external_id for p in people]

        def job(client, index, round_=round_, names=names):
            if index == 0:  # the import's path: one batch for every recipient
                now = timezone.now()
                requests = [
                    record_request_parse(record_body(name, f"batch-{round_}-{name}", now), now=now)
                    for name in names
                ]
                return messages_record_bulk(requests=requests, at=now)
            if index <= 4:
                name = names[index - 1]
                body = record_body(name, f"api-{round_}-{name}", timezone.now() - timedelta(seconds=1))
                return client.post("/api/v1/messages/record/", body, format="json")
            name = names[(index - 5) % 4]
            body = {"recipient": name, "channel": "email", "purpose": "engagement", "content": EMAIL}
            return client.post("/api/v1/messages/", body, format="json")

        results = pool.round(job)
        api = [r for r in results if not isinstance(r, list)]
        assert sorted(r.status_code for r in api) == [201] * 12, [r.json() for r in api]
        for person in people:
            ours = Message.objects.filter(recipient=person).exclude(source=Source.EXTERNAL)
            orchestrated = ours.filter(created_at__gte=timezone.now() - timedelta(minutes=5))
            external = Message.objects.filter(recipient=person, source=Source.EXTERNAL).count()
            decisions = MessageDecision.objects.filter(message__in=orchestrated)
            # By decision (an accepted message may have been delivered since).
            accepted_used = [d.used for d in decisions if d.outcome == MessageStatus.ACCEPTED]
            deferred = [d for d in decisions if d.outcome == MessageStatus.DEFERRED]
            # Afterwards the governor counts every send, recorded or its own: 2 before, 2 recorded, ours.
            after = governor_check(recipient=person, channel="email", purpose="engagement")
            counted = f"{2 + external + len(accepted_used)} of 3"
            if (
                not after.reason.startswith(counted)
                or external != 2
                or len(accepted_used) > 1  # 2 spent + 1: the cap of 3
                or any(u > 3 for u in accepted_used)  # an accept never counted more than the cap
                or any(d.rule != DAILY or d.used < 3 for d in deferred)  # a deferral saw the cap full
                or len(accepted_used) + len(deferred) != 2
            ):
                problems.append((person.external_id, accepted_used, external, after.reason))
    assert problems == [], problems


def test_a_recent_send_holds_the_recipients_lock_until_it_commits_an_old_one_does_not():
    """While a recording of a send a decision could count is open, the governor cannot take the
    recipient's row lock (its decision waits, then counts the send); a backfilled send older than every
    cap window takes no lock before its commit (whose foreign-key check still orders it with a decision)."""
    import threading

    from django.db import OperationalError, connection, transaction

    from orchestrator.recording import message_record
    from orchestrator.recording import record_request_parse as parse

    person = ReachableRecipientFactory()

    def governor_can_lock() -> bool:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM orchestrator_recipient WHERE id = %s FOR UPDATE NOWAIT", [person.pk]
                )
            return True
        except OperationalError:
            return False

    def open_recording(sent_at, external_id) -> bool:
        ready, release, errors = threading.Event(), threading.Event(), []

        def record():
            try:
                now = timezone.now()
                with transaction.atomic():
                    message_record(
                        request=parse(record_body(person.external_id, external_id, sent_at), now=now), at=now
                    )
                    ready.set()
                    release.wait(timeout=20)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                ready.set()
            finally:
                connection.close()

        thread = threading.Thread(target=record)
        thread.start()
        try:
            assert ready.wait(timeout=20)
            return governor_can_lock()
        finally:
            release.set()
            thread.join(timeout=20)
            assert errors == []

    assert open_recording(timezone.now() - timedelta(minutes=5), "recent-1") is False
    assert open_recording(timezone.now() - timedelta(days=30), "old-1") is True
    assert Message.objects.filter(recipient=person, source=Source.EXTERNAL).count() == 2
