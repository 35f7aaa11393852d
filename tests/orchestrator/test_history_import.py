"""`manage.py history_import FILE`: the backfill of sends made elsewhere (CSV or JSON Lines)."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
from datetime import UTC, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from governor.services import governor_check
from orchestrator.models import Message, MessageStatus, Recipient, Source

from .factories import RecipientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["staged", "staged-process", "bulk"])
def recorder(request, monkeypatch):
    """Every test runs on each path of the import: rows staged and recorded in SQL (read in a thread, or
    in a process as large files are), and rows recorded one request at a time by messages_record_bulk
    (SQLite's path): they must give the same result."""
    from orchestrator import importing

    if request.param == "staged-process":
        monkeypatch.setattr(importing, "READER_PROCESS_BYTES", 0)
    elif request.param == "bulk":
        monkeypatch.setattr(importing, "is_postgres", lambda: False)
    return request.param


def iso(t) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def row(n: int, **fields) -> dict:
    return {
        "recipient": "u1",
        "channel": "email",
        "purpose": "promotional",
        "sent_at": iso(timezone.now() - timedelta(hours=30 + n)),
        "source_system": "esp",
        "external_id": f"camp-{n}",
        "content": {"subject": "Sale", "body": "This week only."},
        **fields,
    }


def jsonl(tmp_path, rows, name="history.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def run(path, *args):
    out, err = StringIO(), StringIO()
    call_command("history_import", str(path), *args, stdout=out, stderr=err)
    return out.getvalue()


def test_a_jsonl_file_is_recorded_as_external_sends(tmp_path):
    RecipientFactory(external_id="u1")
    RecipientFactory(external_id="u2")
    rows = [row(n, recipient=f"u{1 + n % 2}") for n in range(7)]
    out = run(jsonl(tmp_path, rows), "--batch-size", "3")
    assert "7 rows: 7 recorded, 0 already recorded (skipped), 0 bad" in out
    messages = Message.objects.filter(source=Source.EXTERNAL)
    assert messages.count() == 7
    assert set(messages.values_list("status", flat=True)) == {MessageStatus.SENT}
    m = messages.get(external_id="camp-3")
    assert m.recipient.external_id == "u2" and m.source_system == "esp"
    assert m.accepted_at == m.sent_at == m.created_at


def test_bad_rows_are_reported_by_line_and_reason_and_none_of_them_is_written(tmp_path):
    RecipientFactory(external_id="u1")
    future = iso(timezone.now() + timedelta(days=2))
    lines = [
        row(0),  # 1: good
        row(1, sent_at=future),  # 2
        row(2, channel="fax"),  # 3
        "",  # 4: blank, skipped
        row(3, purpose="spam"),  # 5
        row(4, recipient="nobody"),  # 6
        {k: v for k, v in row(5).items() if k != "external_id"},  # 7
        "{not json",  # 8
        "[1, 2]",  # 9
        row(6),  # 10: good
        row(7, content={"body": "a\x00b"}),  # 11
    ]
    out = run(jsonl(tmp_path, lines), "--batch-size", "4")
    report = [line for line in out.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in report] == [
        "line 2",
        "line 3",
        "line 5",
        "line 6",
        "line 7",
        "line 8",
        "line 9",
        "line 11",
    ]
    text = "\n".join(report)
    assert "line 2: sent_at:" in text and "in the future" in text
    assert "line 3: channel: Unknown channel 'fax'" in text
    assert "line 5: purpose: Unknown purpose 'spam'" in text
    assert "line 6: recipient: No recipient with external_id 'nobody'" in text
    assert "line 7: external_id: This field is required." in text
    assert "line 8: line: Not a JSON object on one line" in text
    assert "line 9: non_field_errors: Expected a JSON object." in text
    assert "line 11: content: NUL characters are not allowed." in text
    assert "10 rows: 2 recorded, 0 already recorded (skipped), 8 bad" in out
    assert sorted(Message.objects.values_list("external_id", flat=True)) == ["camp-0", "camp-6"]
    assert not Recipient.objects.filter(external_id="nobody").exists()


def test_strict_exits_with_an_error_after_importing_the_good_rows(tmp_path):
    RecipientFactory(external_id="u1")
    path = jsonl(tmp_path, [row(0), row(1, channel="fax")])
    with pytest.raises(CommandError, match="1 bad row"):
        run(path, "--strict", "--no-progress")
    assert Message.objects.count() == 1


def test_a_rerun_skips_what_was_recorded_and_duplicates_in_the_file(tmp_path):
    RecipientFactory(external_id="u1")
    rows = [row(n) for n in range(5)] + [row(2, content={"body": "repeat"})]
    path = jsonl(tmp_path, rows)
    assert "6 rows: 5 recorded, 1 already recorded (skipped), 0 bad" in run(path, "--batch-size", "2")
    first = dict(Message.objects.values_list("external_id", "id"))
    assert "6 rows: 0 recorded, 6 already recorded (skipped), 0 bad" in run(path)
    assert dict(Message.objects.values_list("external_id", "id")) == first
    # A longer export overlapping the first: only the new rows are added.
    path = jsonl(tmp_path, [row(n) for n in range(8)], name="more.jsonl")
    assert "8 rows: 3 recorded, 5 already recorded (skipped), 0 bad" in run(path)
    assert Message.objects.count() == 8


def test_a_csv_file_with_content_columns_or_a_json_content_column(tmp_path):
    RecipientFactory(external_id="u1")
    sent = iso(timezone.now() - timedelta(hours=2))
    path = tmp_path / "sends.csv"
    path.write_text(
        "recipient,channel,purpose,sent_at,source_system,external_id,subject,body,content,status\n"
        f'u1,email,engagement,{sent},esp,e1,"Hello, you",A body,,\n'
        f'u1,push,engagement,{sent},braze,p1,,,"{{""title"": ""Hi"", ""body"": ""Tap""}}",delivered\n'
        f"u1,sms,promotional,{sent},twilio-legacy,SM1,,,Big SALE today,\n"
        f"u1,email,engagement,{sent},esp,,,,,\n"
        f'u1,email,engagement,"{sent}",esp,e2,,"A body\nover two lines",,\n'
        f"u1,email,engagement,{sent},esp,e3,,,{{broken,\n"
    )
    out = run(path)
    assert "line 5: external_id: This field is required." in out
    assert "line 8: content: Not a JSON object" in out
    assert "6 rows: 4 recorded, 0 already recorded (skipped), 2 bad" in out
    email = Message.objects.get(external_id="e1")
    assert email.content == {"subject": "Hello, you", "body": "A body"}
    push = Message.objects.get(external_id="p1")
    assert push.content == {"title": "Hi", "body": "Tap"} and push.status == MessageStatus.DELIVERED
    sms = Message.objects.get(external_id="SM1")
    assert sms.content == {"body": "Big SALE today"}
    assert {w["code"] for w in sms.warnings} >= {"sms_purpose"}
    assert Message.objects.get(external_id="e2").content == {"body": "A body\nover two lines"}


def test_lint_warnings_are_kept_on_imported_sends(tmp_path):
    RecipientFactory(external_id="u1")
    rows = [
        row(0, channel="push", content={"title": "Hi", "body": "word " * 80}),
        row(1, channel="sms", purpose="promotional", content=None),
        row(2, channel="email", content={"body": "no subject here"}),
    ]
    run(jsonl(tmp_path, rows))
    codes = {
        m.external_id: {w["code"] for w in m.warnings} for m in Message.objects.filter(source=Source.EXTERNAL)
    }
    assert "push_too_long" in codes["camp-0"]
    assert codes["camp-1"] == {"sms_purpose"}
    assert "email_no_subject" in codes["camp-2"]


def test_create_recipients_and_gzip_and_dry_run(tmp_path):
    path = tmp_path / "h.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for n in range(3):
            f.write(json.dumps(row(n, recipient=f"new-{n}", timezone="Asia/Tokyo")) + "\n")
    out = run(path, "--dry-run")
    # Unknown recipients, without --create-recipients.
    assert "3 rows: 0 would record, 0 already recorded (skipped), 3 bad" in out
    out = run(path, "--dry-run", "--create-recipients")
    assert "3 rows: 3 would record, 0 already recorded (skipped), 0 bad" in out
    assert not Message.objects.exists() and not Recipient.objects.exists()
    out = run(path, "--create-recipients")
    assert "3 rows: 3 recorded" in out
    assert set(Recipient.objects.values_list("timezone", flat=True)) == {"Asia/Tokyo"}


def test_imported_sends_count_toward_the_cap(tmp_path):
    RecipientFactory(external_id="u1")
    now = timezone.now()
    rows = [row(n, purpose="engagement", sent_at=iso(now - timedelta(hours=n + 1))) for n in range(3)]
    run(jsonl(tmp_path, rows))
    decision = governor_check(
        recipient=Recipient.objects.get(external_id="u1"), channel="email", purpose="engagement"
    )
    assert decision.status == MessageStatus.DEFERRED and "3 of 3" in decision.reason


def test_a_missing_file_or_unknown_format_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        run(tmp_path / "nope.jsonl")
    other = tmp_path / "h.txt"
    other.write_text("")
    with pytest.raises(CommandError, match="format"):
        run(other)
    assert "0 rows" in run(other, "--format", "csv")


def test_the_progress_bar_is_drawn_on_stderr(tmp_path, capsys):
    RecipientFactory(external_id="u1")
    call_command("history_import", str(jsonl(tmp_path, [row(0), row(1)])), stdout=StringIO())
    err = capsys.readouterr().err
    assert "history_import" in err and "100%" in err


def test_a_request_built_in_python_may_use_the_choices_and_datetimes():
    from orchestrator.models import Channel, Purpose
    from orchestrator.recording import record_request_parse

    now = timezone.now()
    request = record_request_parse(
        {
            "recipient": "u1",
            "channel": Channel.PUSH,
            "purpose": Purpose.ENGAGEMENT,
            "sent_at": now - timedelta(minutes=1),
            "source_system": "braze",
            "external_id": 7,
        },
        now=now,
    )
    assert (request.channel, request.purpose, request.external_id) == ("push", "engagement", "7")
    assert type(request.channel) is str


MESSAGE_FIELDS = [f.attname for f in Message._meta.concrete_fields if f.attname not in ("id", "recipient_id")]


def recorded_rows() -> dict[tuple[str, str], dict]:
    return {
        (m["source_system"], m["external_id"]): m
        for m in Message.objects.values("recipient__external_id", *MESSAGE_FIELDS)
    }


def report(line: int, errors: dict) -> tuple[int, dict]:
    """A bad row's report without the clock reading a future send's reason quotes."""
    return line, {k: [re.sub(r" \(it is [^)]*\)", "", m) for m in v] for k, v in errors.items()}


def mixed_rows() -> list:
    """Good and bad rows mixed in one batch: repeats (of good, duplicate and refused keys), unknown and
    creatable recipients, delivered sends, shared and one-off contents (some breaking a channel's job),
    text that COPY must escape."""
    return [
        row(0),
        row(1, recipient="nobody"),  # unknown: refused
        row(2, channel="fax"),  # invalid
        row(0, content={"body": "a repeat"}),  # repeat of line 1: duplicate
        row(1, recipient="u1"),  # repeat of a refused key: refused like it
        row(3, recipient="new-1", create_recipient=True, timezone="Asia/Tokyo"),
        row(4, recipient="new-1", create_recipient=True, timezone="Europe/Paris"),
        row(5, channel="sms", purpose="promotional", content="SALE\tnow\\50% off\nall week"),
        row(6, external_id="tab\there\\and\nnewline", content={"subject": "é ü", "body": "x\r\ny"}),
        row(7, status="delivered", delivered_at=iso(timezone.now() - timedelta(hours=2))),
        row(8, channel="push", content={"title": "Hi", "body": "word " * 80, "action_url": "app://x"}),
        row(9, content={"body": "nested", "extra": {"k": [1, 2]}}),
        row(10, channel="sms", purpose="promotional", content=None),
        "{broken",
        row(11, sent_at="2999-01-01T00:00:00Z"),
        row(12, recipient=" u2 "),
        row(13, recipient="u1", external_id="done-before"),  # recorded by an earlier run
    ]


def test_the_staged_and_bulk_paths_record_the_same_rows_and_report_the_same_lines(
    tmp_path, monkeypatch, recorder
):
    """The same mixed file through each path, from the same start: same counts, same report, and the
    same messages, field by field (the time of recording aside)."""
    if recorder != "staged":
        pytest.skip("compares the paths itself")
    from django.db import transaction

    from orchestrator import importing

    RecipientFactory(external_id="u1")
    RecipientFactory(external_id="u2")
    run(jsonl(tmp_path, [row(13, recipient="u1", external_id="done-before")], name="first.jsonl"))
    path = jsonl(tmp_path, mixed_rows())
    results = {}
    for mode in ("staged", "staged-process", "bulk"):
        with monkeypatch.context() as patch:
            if mode == "staged-process":
                patch.setattr(importing, "READER_PROCESS_BYTES", 0)
            elif mode == "bulk":
                patch.setattr(importing, "is_postgres", lambda: False)
            with transaction.atomic():
                bad = []
                summary = importing.history_import(
                    path=path,
                    batch_size=50,
                    on_bad=lambda line, errors, bad=bad: bad.append(report(line, errors)),
                )
                rows = recorded_rows()
                for m in rows.values():
                    m.pop("updated_at"), m.pop("recorded_at")
                tz = dict(Recipient.objects.values_list("external_id", "timezone"))
                results[mode] = (summary, bad, rows, tz)
                transaction.set_rollback(True)
    staged, process, bulk = results["staged"], results["staged-process"], results["bulk"]
    assert staged == bulk and process == bulk
    summary, bad, rows, tz = bulk
    assert (summary.rows, summary.recorded, summary.duplicates, summary.bad) == (17, 10, 2, 5)
    assert [line for line, _ in bad] == [2, 3, 5, 14, 15]
    assert "recipient" in dict(bad)[5] and "in the future" in dict(bad)[15]["sent_at"][0]
    assert tz["new-1"] == "Asia/Tokyo"
    assert rows[("esp", "tab\there\\and\nnewline")]["content"] == {"subject": "é ü", "body": "x\r\ny"}
    assert rows[("esp", "camp-5")]["content"] == {"body": "SALE\tnow\\50% off\nall week"}
    assert {w["code"] for w in rows[("esp", "camp-10")]["warnings"]} == {"sms_purpose"}


def test_the_staged_and_bulk_paths_agree_on_a_dry_run(tmp_path, monkeypatch, recorder):
    if recorder != "staged":
        pytest.skip("compares the paths itself")
    from orchestrator import importing

    RecipientFactory(external_id="u1")
    RecipientFactory(external_id="u2")
    path = jsonl(tmp_path, mixed_rows())
    results = []
    for postgres in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr(importing, "is_postgres", lambda postgres=postgres: postgres)
            bad = []
            summary = importing.history_import(
                path=path, dry_run=True, on_bad=lambda line, errors, bad=bad: bad.append(report(line, errors))
            )
            results.append((summary, bad))
    assert results[0] == results[1]
    assert not Message.objects.exists() and not Recipient.objects.filter(external_id="new-1").exists()


def test_a_batch_of_only_repeats_and_bad_rows_writes_nothing(tmp_path):
    RecipientFactory(external_id="u1")
    lines = [row(0), row(1, channel="fax"), row(0), row(0), "[]"]
    out = run(jsonl(tmp_path, lines), "--batch-size", "2")
    assert "5 rows: 1 recorded, 2 already recorded (skipped), 2 bad" in out
    assert Message.objects.count() == 1


def test_the_lint_memo_stays_bounded(monkeypatch):
    from orchestrator import recording

    monkeypatch.setattr(recording, "LINT_MEMO_MAX", 3)
    now = timezone.now()
    stager = recording.RecordStager(policies={})
    for n in range(10):
        body = row(n, content={"body": f"one-off {n % 5}"})
        stager.add(recording.record_request_parse(body, now=now), n + 1)
    batch = stager.take()
    assert len(batch.lines) == 10 and len(stager._refs) <= 3
    refs = {int(line.split("\t")[9]) for line in batch.lines}
    assert refs <= set(batch.contents)  # every line's content travels with its batch


def test_the_plain_row_fast_path_stages_what_the_validator_would(recorder):
    """`RecordStager.add_plain` stages a row of the common shape exactly as record_request_parse then
    `add` would, and declines (staging nothing) every other row, good or bad, for the validator."""
    if recorder != "staged":
        pytest.skip("one run is enough")
    from orchestrator.recording import RecordInvalid, RecordStager, conf, record_request_parse

    now = timezone.now()
    variants = [
        row(0),
        row(1, content=None),
        row(2, content={}),
        row(3, channel="sms", purpose="promotional", content={"body": "SALE now"}),
        row(4, sent_at="2026-01-02T03:04:05"),  # naive: UTC
        row(5, sent_at="2026-01-02T03:04:05.123456+02:00"),
        row(6, create_recipient=True),
        row(7, create_recipient=None),
        row(0),  # a repeat
        # Declined (the validator decides):
        row(8, recipient=" u1"),
        row(9, external_id=9),
        row(10, external_id="tab\there"),
        row(11, external_id="back\\slash"),
        row(12, recipient="ünï"),
        row(13, channel="fax"),
        row(14, sent_at="2999-01-01T00:00:00Z"),
        row(15, sent_at="1960-01-01T00:00:00Z"),
        row(16, sent_at="not a time"),
        row(17, status="delivered", delivered_at=iso(now - timedelta(hours=1))),
        row(18, status="sent"),
        row(19, timezone="Asia/Tokyo"),
        row(20, content="a summary"),
        row(21, content={"body": "x", "n": 1}),
        row(22, content={"body": "a\x00b"}),
        row(23, content={"body": "x" * 30_000}),
        row(24, create_recipient="yes"),
        row(25, recipient="r" * 201),
        {k: v for k, v in row(26).items() if k != "sent_at"},
        [1, 2],
    ]
    latest = now + conf("CLOCK_SKEW")
    fast, slow = RecordStager(policies={}), RecordStager(policies={})
    taken = []
    for n, data in enumerate(variants, 1):
        before = (len(fast.batch.lines), len(fast.batch.repeats))
        if fast.add_plain(data, n, latest=latest):
            taken.append(n)
        else:
            assert (len(fast.batch.lines), len(fast.batch.repeats)) == before
            with contextlib.suppress(RecordInvalid):
                fast.add(record_request_parse(data, now=now), n)
        with contextlib.suppress(RecordInvalid):
            slow.add(record_request_parse(data, now=now), n)
    assert taken == list(range(1, 10))
    assert fast.take() == slow.take()
