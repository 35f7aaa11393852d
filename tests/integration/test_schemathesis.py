"""Schemathesis fuzzes the served OpenAPI schema against a real gunicorn (DEBUG off): every check, bounded
examples, and the run must find nothing — no server error, no response off its schema, no undocumented
status or content type. Its summary is printed and kept in var/test-artefacts/schemathesis.txt.

Positive-data acceptance: GET operations must accept every schema-valid request. Writes, the reports'
range and list parameters, and the cursor of the two cursor-paginated lists (an opaque token only the
server's links carry), may also answer 400 for what JSON Schema cannot say (a phone number
that is not a real number, a recipient unreachable on the channel, a journey whose steps do not fit
their channel, a date range the report refuses): that is the one relaxation, and every other check is
strict for every operation. NUL characters are generated too: they must be refused cleanly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from tests.browser import ARTEFACTS
from tests.orchestrator.factories import ReachableRecipientFactory

from .servers import gunicorn

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409"]

[[operations]]
include-method = ["POST", "PATCH", "PUT"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

[[operations]]
include-path-regex = "/reports?/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

[[operations]]
include-operation-id = ["v1_recipients_list", "v1_messages_list"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"""
MAX_EXAMPLES = 12


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path, django_user_model):
    user = django_user_model.objects.create_superuser("fuzzer", "fuzzer@example.com", "fuzzer-pass-123")
    token = Token.objects.create(user=user)
    ReachableRecipientFactory(external_id="0")  # what the generated ids most often name
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    with gunicorn(tmp_path / "gunicorn.log", Q_SYNC="1") as url:
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(config),
                "run",
                f"{url}/api/schema/",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "9",
                "--workers",
                "2",
                "--no-color",
                "--generation-database",
                "none",
                "--header",
                f"Authorization: Token {token.key}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
    output = done.stdout + done.stderr
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / "schemathesis.txt").write_text(output)
    summary = output[output.rfind("SUMMARY") - 40 :] if "SUMMARY" in output else output[-3000:]
    print(f"\nSchemathesis ({MAX_EXAMPLES} examples per operation, all checks):\n{summary}")
    server_log = (tmp_path / "gunicorn.log").read_text()
    assert done.returncode == 0, f"{summary}\n{output[-6000:]}\n--- server log ---\n{server_log[-3000:]}"
    assert re.search(r"Tested: \d+", output), output[-3000:]
    assert "Traceback" not in server_log, server_log[-3000:]
