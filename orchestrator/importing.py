"""The backfill: sends made elsewhere, read from a CSV or JSON Lines file and recorded in batches.

Streamed (one batch in memory at a time, whatever the file's size): every row is validated on its own
(`recording.record_request_parse`); a bad row is reported with its line number and reasons and nothing of
it is written; the good rows are recorded set-based, one transaction per batch (`messages_record_bulk`:
locks, duplicates, lint, one COPY). A row recorded before — by an earlier run or earlier in the file — is
skipped, so the import is safe to re-run after a failure or on an overlapping export.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import gzip
import io
import json
import multiprocessing
import os
import pickle
import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from django.utils import timezone

from channels_app.lint import channel_policy_views

from .db import is_postgres
from .recording import (
    RecordInvalid,
    RecordRequest,
    RecordStager,
    StagedRecords,
    conf,
    messages_record_bulk,
    messages_record_staged,
    record_request_parse,
)

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
    """(line number, the parsed object or a RecordInvalid) per non-blank line (orjson: three times the
    standard library's speed, strict about what is JSON)."""
    loads = orjson.loads
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
    reader: str | None = None,
) -> ImportSummary:
    """Import a CSV or JSON Lines file of sends made elsewhere; returns the counts.

    `on_bad(line, errors)` hears of every bad row, in line order; `progress` is a tqdm-like bar whose
    total is the file's size in bytes (updated once per batch). `create_recipients` lets every row create
    its recipient (a row may also say `create_recipient`); `dry_run` validates and writes nothing.

    On PostgreSQL the rows are read, validated and linted in a reader process (`reader="process"`, the
    default for files over READER_PROCESS_BYTES) while this one records the previous batch set-based
    (`messages_record_staged`): the two cores work at once. `reader="thread"` reads in a thread.
    """
    fmt = import_format(path, fmt)
    size = batch_size or conf("IMPORT_BATCH")
    summary = ImportSummary()
    if reader is None:
        big = os.path.getsize(path) > READER_PROCESS_BYTES
        reader = "process" if big and is_postgres() else "thread"
    if reader not in ("process", "thread"):
        raise ValueError(f"Unknown reader {reader!r}; expected process or thread.")
    # A batch makes tens of thousands of short-lived objects: let the cyclic collector run per batch, not
    # every 700 allocations over everything alive (nothing the import makes is cyclic).
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
    try:
        return _import(path, fmt, size, summary, create_recipients, dry_run, on_bad, progress, reader)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


READER_PROCESS_BYTES = 4 * 2**20  # a smaller file is read in a thread (a process is not worth starting)
_WAIT_S = 0.5


@dataclass
class _Batch:
    """Rows read and validated together: the requests (with their lines) — or, staged for PostgreSQL,
    their COPY lines — the bad rows, and how far into the file (bytes) the reader was when it closed the
    batch."""

    requests: list[RecordRequest] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    staged: StagedRecords | None = None
    bad: list[tuple[int, dict[str, list[str]]]] = field(default_factory=list)
    rows: int = 0
    position: int = 0


_DONE = "done"


def _read(path, fmt: str, size: int, create_recipients: bool, out, stop, policies, process: bool) -> None:
    """The reader: parse and validate rows into batches while the recorder writes the previous one (the
    database's time and the parsing overlap). A bounded queue keeps memory flat. With `policies` (the
    channels' lint policies) the valid rows are staged (`RecordStager`) for `messages_record_staged`."""
    try:
        stager = RecordStager(policies=policies) if policies is not None else None
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if str(path).lower().endswith(".gz") else raw
            rows = _csv_rows(stream) if fmt == "csv" else _jsonl_rows(stream)
            skew = conf("CLOCK_SKEW")
            batch, now = _Batch(), timezone.now()
            latest = now + skew
            for number, data in rows:
                batch.rows += 1
                if isinstance(data, RecordInvalid):
                    batch.bad.append((number, data.errors))
                else:
                    if create_recipients and isinstance(data, dict):
                        data.setdefault("create_recipient", True)
                    if stager is not None and stager.add_plain(data, number, latest=latest):
                        pass  # the common shape, staged as record_request_parse would have it
                    else:
                        try:
                            request = record_request_parse(data, now=now)
                        except RecordInvalid as exc:
                            batch.bad.append((number, exc.errors))
                        else:
                            if stager is not None:
                                stager.add(request, number)
                            else:
                                batch.requests.append(request)
                                batch.lines.append(number)
                if batch.rows >= size:  # bad rows count too: memory stays flat
                    batch.position = raw.tell()
                    if stager is not None:
                        batch.staged = stager.take()
                    out.put(batch)
                    if stop.is_set():
                        return
                    batch, now = _Batch(), timezone.now()
                    latest = now + skew
            batch.position = raw.tell()
            if stager is not None:
                batch.staged = stager.take()
            out.put(batch)
    except BaseException as exc:  # noqa: BLE001 - handed to the recorder, which raises it
        if process:  # it crosses to the recorder pickled: send what surely pickles
            try:
                pickle.dumps(exc)
            except Exception:  # noqa: BLE001
                exc = RuntimeError("".join(traceback.format_exception(exc)))
        out.put(exc)
    finally:
        out.put(_DONE)


def _import(path, fmt, size, summary, create_recipients, dry_run, on_bad, progress, reader) -> ImportSummary:
    staged = is_postgres()
    # Read here, once: the reader process has no database (and a batch lints as the import started).
    policies = channel_policy_views() if staged else None
    process = reader == "process"
    if process:
        # Forked: it inherits the settings and the policies, and touches no connection of ours.
        context = multiprocessing.get_context("fork")
        batches, stop, start = context.Queue(maxsize=2), context.Event(), context.Process
    else:
        batches, stop, start = queue.Queue(maxsize=2), threading.Event(), threading.Thread
    worker = start(
        target=_read,
        args=(path, fmt, size, create_recipients, batches, stop, policies, process),
        daemon=True,
        name="history-read",
    )
    worker.start()
    read = 0
    try:
        while (batch := _next(batches, worker)) != _DONE:
            if isinstance(batch, BaseException):
                raise batch
            summary.rows += batch.rows
            bad = batch.bad
            if batch.staged is not None:
                outcome = messages_record_staged(batch=batch.staged, at=timezone.now(), dry_run=dry_run)
                summary.recorded += outcome.recorded
                summary.duplicates += outcome.duplicates
                bad.extend(outcome.invalid)
            elif batch.requests:
                outcomes = messages_record_bulk(
                    requests=batch.requests, at=timezone.now(), dry_run=dry_run, durable=False
                )
                for number, outcome in zip(batch.lines, outcomes, strict=True):
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
                progress.update(batch.position - read)
                read = batch.position
                progress.set_postfix(
                    recorded=summary.recorded, duplicates=summary.duplicates, bad=summary.bad, refresh=False
                )
    finally:
        stop.set()
        while worker.is_alive():  # let a reader blocked on the full queue finish
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.1)
        if process:
            worker.join()
            batches.close()
    return summary


def _next(batches, worker):
    """The reader's next batch (or exception, or _DONE); a reader that died without a word is an error."""
    while True:
        try:
            return batches.get(timeout=_WAIT_S)
        except queue.Empty:
            if not worker.is_alive():
                try:
                    return batches.get(timeout=_WAIT_S)
                except queue.Empty:
                    raise RuntimeError("The history reader stopped without finishing the file.") from None
