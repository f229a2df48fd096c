"""The labelers a run can use, behind one interface: sections of a report in, proposals out."""

from dataclasses import dataclass, field
from typing import Protocol

from labeling.types import ProposedFinding

LABELERS = ("rules", "llm", "ensemble")


@dataclass
class LabelResult:
    proposals: list[ProposedFinding]
    raw_reply: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    warnings: list[str] = field(default_factory=list)


class Labeler(Protocol):
    name: str
    version: str
    prompt_version: str
    model_name: str

    def label(self, sections: dict[str, str], *, schema: str) -> LabelResult: ...


class RulesLabeler:
    """The offline default: sentence splitting, negation and uncertainty scope, lexicons."""

    name = "rules"
    prompt_version = ""
    model_name = ""

    def __init__(self, params: dict):
        from labeling.rules import RULES_VERSION

        self.params = params
        self.version = RULES_VERSION

    def label(self, sections: dict[str, str], *, schema: str) -> LabelResult:
        from labeling.rules import rules_label

        return LabelResult(proposals=rules_label(sections, schema=schema))


def labeler_for(name: str, params: dict | None = None) -> Labeler:
    """The labeler ``name`` set up with a run's ``params``. A URL or key in them (at any depth) is refused
    for every labeler with a 400 naming the field: endpoints and keys come from the server's settings only
    (labeling/llm/endpoints.py), and a run stores its params."""
    from labeling.llm.endpoints import forbidden_params_check  # labeling.llm imports this module

    forbidden_params_check(params or {})
    if name == "rules":
        return RulesLabeler(params or {})
    if name == "llm":
        from labeling.llm import LLMLabeler

        return LLMLabeler(params or {})
    if name == "ensemble":
        from labeling.llm.ensemble import EnsembleLabeler

        return EnsembleLabeler(params or {})
    raise ValueError(f"labeler: {name!r} is not available; choose one of {', '.join(LABELERS)}")
