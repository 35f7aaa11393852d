"""drf-spectacular post-processing: every operation documents the error answers it can give, in the one
error shape of orchestrator.api.errors, so the served schema matches the server (Schemathesis checks it)."""

from __future__ import annotations

ERROR = {
    "type": "object",
    "description": "An error: a stable `code` and a plain `detail` (500/503 add the `request_id` that is in "
    "the log).",
    "properties": {
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["code", "detail"],
}
VALIDATION_ERROR = {
    "type": "object",
    "description": "Bad input, nothing written: `{field: [messages]}` naming each field (dotted for nested "
    "values, `non_field_errors` for the body as a whole), or `{code, detail}`.",
    "additionalProperties": True,
}
STATUS_TEXT = {
    "400": ("ValidationError", "Bad input; the body names each field and nothing was written."),
    "401": ("Error", "No valid credentials (a token or a session)."),
    "403": ("Error", "Authenticated, but not allowed to do this."),
    "404": ("Error", "No such resource (or a referenced recipient, journey or message is unknown)."),
    "409": ("Error", "Conflicts with the current state (e.g. an Idempotency-Key reused with another body)."),
    "413": ("Error", "The body is larger than the upload limit."),
    "415": ("Error", "Unsupported content type; send application/json."),
    "500": ("Error", "An unexpected error; the body's request_id is in the log."),
    "503": ("Error", "The database was unavailable; retry after Retry-After seconds."),
}
WRITES = {"post", "put", "patch", "delete"}
# The server refuses a NUL character in any path or query value (PostgreSQL text cannot hold one).
NO_NUL = "^[^\\u0000]*$"


def _error(status: str) -> dict:
    name, description = STATUS_TEXT[status]
    response = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }
    if status == "503":
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
    return response


def error_responses_add(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR)
    schemas.setdefault("ValidationError", VALIDATION_ERROR)
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in WRITES | {"get", "head"}:
                continue
            params = operation.get("parameters", [])
            for param in params:
                schema = param.get("schema", {})
                constrained = {"enum", "format", "pattern"} & set(schema)
                plain_string = schema.get("type") == "string" and not constrained
                if param.get("in") in ("path", "query") and plain_string:
                    schema["pattern"] = NO_NUL
            has_body = "requestBody" in operation
            statuses = {"401", "403", "500", "503"}
            if has_body or method in WRITES or any(p.get("in") in ("query", "header") for p in params):
                statuses.add("400")
            # Any path may name a missing resource (or a missing page of a list).
            statuses.add("404")
            if method in WRITES:
                statuses |= {"409", "413", "415"}
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses.setdefault(status, _error(status))
    return result
