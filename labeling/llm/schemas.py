"""What the model must answer, per label schema: pydantic models (to validate the reply) and the JSON schema
sent as ``response_format`` (OpenAI structured output, strict: every field required, no extra fields).

The model copies the sentence it read a finding from; offsets are never asked for (the platform locates the
sentence in the section text itself).
"""

import copy
import json
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labeling.types import CHEXPERT_OBSERVATIONS, SCHEMAS

REX_CATEGORIES = ("1a", "1b", "1c", "1d", "1e", "1f", "2a", "2b", "2c", "2d", "2e", "2f", "2g", "2h")
REX_REGIONS = ("L", "H", "M", "C", "N", "B", "A")

Laterality = Literal["left", "right", "bilateral", ""]


class _Finding(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sentence: str = Field(description="the report sentence this finding comes from, copied exactly")
    section: str = Field(description="the report section the sentence is in, e.g. findings or impression")
    phrase: str = Field(default="", description="the words that state the finding")
    assertion: Literal["present", "absent", "uncertain"]
    laterality: Laterality = ""
    location: str = ""
    size_mm: float | None = None


class ChexpertFinding(_Finding):
    code: Literal[CHEXPERT_OBSERVATIONS]  # type: ignore[valid-type]


class RexFinding(_Finding):
    code: Literal[REX_CATEGORIES]  # type: ignore[valid-type]
    region: Literal[REX_REGIONS] = "L"  # type: ignore[valid-type]
    abnormal: bool = True
    refers_to_prior: bool = False


class PetctFinding(_Finding):
    code: Literal["suv"] = "suv"
    suvmax: float
    slice: int


class ChexpertReply(BaseModel):
    findings: list[ChexpertFinding]


class RexReply(BaseModel):
    findings: list[RexFinding]


class PetctReply(BaseModel):
    findings: list[PetctFinding]


REPLY_MODELS: dict[str, type[BaseModel]] = {
    "chexpert": ChexpertReply,
    "rexgroundingct": RexReply,
    "petct": PetctReply,
}
# Fields of a finding that go to ProposedFinding.extra, per schema.
EXTRA_FIELDS = {
    "chexpert": (),
    "rexgroundingct": ("region", "abnormal", "refers_to_prior"),
    "petct": ("suvmax", "slice"),
}
assert set(REPLY_MODELS) == set(SCHEMAS)


class ReplyInvalid(ValueError):
    """The reply is not JSON or does not match the schema."""


def reply_model(schema: str) -> type[BaseModel]:
    try:
        return REPLY_MODELS[schema]
    except KeyError:
        raise ValueError(f"schema: {schema!r} is not one of {', '.join(SCHEMAS)}") from None


def parse_reply(schema: str, content: str) -> BaseModel:
    """The validated reply, or ``ReplyInvalid`` saying what is wrong with it."""
    text = _strip_fences(content or "")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplyInvalid(f"reply is not JSON: {exc}") from None
    if isinstance(data, list):  # a bare list of findings is accepted
        data = {"findings": data}
    try:
        return reply_model(schema).model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ReplyInvalid(
            f"reply does not match the {schema} schema ({exc.error_count()} errors; {where}: {first['msg']})"
        ) from None


def _strip_fences(text: str) -> str:
    """Models in json_object mode sometimes wrap the JSON in a ```json fence."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


@cache
def _response_format(schema: str) -> str:
    return json.dumps(
        {
            "type": "json_schema",
            "json_schema": {"name": f"{schema}_findings", "strict": True, "schema": json_schema(schema)},
        }
    )


def json_schema(schema: str) -> dict:
    """The strict JSON schema of the reply (all properties required, no additional properties)."""
    return _strict(reply_model(schema).model_json_schema())


def response_format(schema: str) -> dict:
    """``response_format`` for structured output (a fresh copy: callers may change it)."""
    return json.loads(_response_format(schema))


def _strict(node):
    node = copy.deepcopy(node)

    def walk(n):
        if isinstance(n, dict):
            n.pop("default", None)
            n.pop("title", None)
            if "const" in n:
                n["enum"] = [n.pop("const")]
            if n.get("type") == "object" and "properties" in n:
                n["required"] = list(n["properties"])
                n["additionalProperties"] = False
            for value in n.values():
                walk(value)
        elif isinstance(n, list):
            for value in n:
                walk(value)

    walk(node)
    return node
