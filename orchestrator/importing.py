"""The backfill: sends made elsewhere, read from a CSV or JSON Lines file and recorded in batches.

Streamed (one batch in memory at a time, whatever the file's size): every row is validated on its own
(`recording.record_request_parse`); a bad row is reported with its line number and reasons and nothing of
it is written; the good rows are recorded set-based, one transaction per batch (`messages_record_bulk`:
locks, duplicates, lint, one COPY). A row recorded before — by an earlier run or earlier in the file — is
skipped, so the import is safe to re-run after a failure or on an overlapping export.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.utils import timezone

from .recording import RecordInvalid, RecordRequest, conf, messages_record_bulk, record_request_parse

FORMATS = ("csv", "jsonl")
CONTENT_COLUMNS = ("subject", "title", "body", "action_url")
BadRow = Callable[[int, dict[str, list[str]]], None]


@dataclass
class ImportSummary:
    rows: int = 0  # data rows read (blank lines aside)
    recorded: int = 0
    duplicates: int = 0
    bad: int = 0


def import_format(path: str | Path, fmt: str | None = None) -> str:
    """`csv` or `jsonl`, from `fmt` or the file name (`.csv`, `.jsonl`, `.ndjson`, `.json`; `.gz` too)."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.")
        return fmt
    name = str(path).lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(f"Cannot tell the format of {path}: name it .csv or .jsonl, or pass --format.")


def _jsonl_rows(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(line number, the parsed object or a RecordInvalid) per non-blank line."""
    loads = json.loads
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield number, loads(line)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            yield number, RecordInvalid({"line": [f"Not a JSON object on one line: {exc}."]})


def _csv_row(row: dict[str | None, Any]) -> dict[str, Any] | RecordInvalid:
    """A CSV row as a record body: empty cells are absent; `content` is a JSON object or a plain-text
    summary; subject/title/body/action_url columns are content too."""
    if None in row:
        return RecordInvalid({"line": ["More cells than the header has columns."]})
    data: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
    content = data.get("content")
    if isinstance(content, str) and content.lstrip().startswith("{"):
        try:
            data["content"] = json.loads(content)
        except ValueError as exc:
            return RecordInvalid({"content": [f"Not a JSON object: {exc}."]})
    parts = {k: data.pop(k) for k in CONTENT_COLUMNS if k in data}
    if parts:
        if "content" in data and not isinstance(data["content"], dict):
            return RecordInvalid({"content": ["Give either a content column or subject/title/body columns."]})
        data["content"] = {**data.get("content", {}), **parts}
    return data


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    try:
        reader = csv.DictReader(text)
        if reader.fieldnames is None:
            return
        reader.fieldnames = [(name or "").strip() for name in reader.fieldnames]
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            yield start, _csv_row(row)
    finally:
        text.detach()  # the caller's file stays open (its position drives the progress bar)


def history_import(
    *,
    path: str | Path,
    fmt: str | None = None,
    batch_size: int | None = None,
    create_recipients: bool = False,
    dry_run: bool = False,
    on_bad: BadRow | None = None,
    progress: Any = None,
) -> ImportSummary:
    """Import a CSV or JSON Lines file of sends made elsewhere; returns the counts.

    `on_bad(line, errors)` hears of every bad row, in line order; `progress` is a tqdm-like bar whose
    total is the file's size in bytes (updated once per batch). `create_recipients` lets every row create
    its recipient (a row may also say `create_recipient`); `dry_run` validates and writes nothing.
    """
    fmt = import_format(path, fmt)
    size = batch_size or conf("IMPORT_BATCH")
    summary = ImportSummary()
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if str(path).lower().endswith(".gz") else raw
        rows = _csv_rows(stream) if fmt == "csv" else _jsonl_rows(stream)
        batch: list[RecordRequest] = []
        lines: list[int] = []
        bad: list[tuple[int, dict[str, list[str]]]] = []
        read = [0]

        def flush() -> None:
            if batch:
                outcomes = messages_record_bulk(requests=batch, at=timezone.now(), dry_run=dry_run)
                for number, outcome in zip(lines, outcomes, strict=True):
                    if outcome.outcome == "recorded":
                        summary.recorded += 1
                    elif outcome.outcome == "duplicate":
                        summary.duplicates += 1
                    else:
                        bad.append((number, outcome.errors or {}))
            summary.bad += len(bad)
            if on_bad is not None:
                for number, errors in sorted(bad, key=lambda b: b[0]):
                    on_bad(number, errors)
            if progress is not None:
                position = raw.tell()
                progress.update(position - read[0])
                read[0] = position
                progress.set_postfix(
                    recorded=summary.recorded, duplicates=summary.duplicates, bad=summary.bad, refresh=False
                )
            batch.clear()
            lines.clear()
            bad.clear()

        now = timezone.now()
        for number, data in rows:
            summary.rows += 1
            if isinstance(data, RecordInvalid):
                bad.append((number, data.errors))
            else:
                if create_recipients and isinstance(data, dict):
                    data.setdefault("create_recipient", True)
                try:
                    batch.append(record_request_parse(data, now=now))
                    lines.append(number)
                except RecordInvalid as exc:
                    bad.append((number, exc.errors))
            if len(batch) + len(bad) >= size:  # bad rows count too: memory stays flat on any file
                flush()
                now = timezone.now()
        flush()
    return summary
