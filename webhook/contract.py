"""The callback body: the JSON the workflow's HTTP node sends, checked before anything else.

Parsed by webhook.requests.load_json (pydantic-core's parser: no recursion in Python, at most
200 levels of nesting, strict JSON in UTF-8), so invalid UTF-8, a lone surrogate escape, a raw
control character in a string, NaN or Infinity and trailing bytes are all invalid JSON,
answered 400 like any other malformed body. (Escaped control characters, "\u0000" included,
are valid JSON: they pass, and the task layer cleans the text before storing it.)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks import CallbackReport
from webhook.refusal import Refusal
from webhook.requests import load_json


class CallbackBody(BaseModel):
    """The contract's fields; unknown keys are ignored, anything else wrong is a 400."""

    model_config = ConfigDict(extra="ignore", strict=True)

    task_id: Annotated[str, Field(min_length=1, max_length=64)]
    token: Annotated[str, Field(min_length=1, max_length=128)]
    status: Literal["success", "failed", "processing"]
    text: str | None = None
    error: str | None = None
    progress: Annotated[int, Field(ge=0, le=100)] | None = None


FIELDS = frozenset(CallbackBody.model_fields)


def parse_callback(raw: bytes) -> CallbackReport:
    """The report a body carries, or Refusal(400) saying (in our words) what is wrong."""
    value = load_json(raw)
    try:
        body = CallbackBody.model_validate(value)
    except ValidationError as exc:
        raise Refusal(400, _reason(exc)) from None
    return CallbackReport(
        run_id=body.task_id,
        token=body.token,
        status=body.status,
        text=body.text or "",
        error=body.error or "",
        progress=body.progress,
    )


def _reason(exc: ValidationError) -> str:
    """What is wrong, naming only the contract's own fields (never a value or a stray key)."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    location = first["loc"]
    if not location:
        return "not a JSON object"
    field = location[0]
    if field not in FIELDS:
        return "malformed callback body"
    if first["type"] == "missing":
        return f"field {field} missing"
    return f"field {field} of the wrong type or out of range"
