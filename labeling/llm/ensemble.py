"""The ``ensemble`` labeler: several labelers (rules, LLM models) vote; disagreements are flagged for review.

``params = {"members": [{"labeler": "rules"}, {"labeler": "llm", "model": "a"}, ...], "min_votes": 1}``.
A finding is (code, section, sentence span); spans of one code in one section that overlap are the same
finding (labelers cut sentences slightly differently). Each member votes its assertion, or ``not
mentioned``; the proposal takes the majority assertion among those who mentioned it (a tie between
present and absent gives ``uncertain``). Every proposal carries ``extra["votes"]`` ({member: assertion})
and ``extra["disagreement"]`` (True when the votes are not unanimous), so review can start there.
"""

from collections import Counter
from contextlib import ExitStack, contextmanager

from core.errors import ApplicationError
from labeling.labelers import LabelResult
from labeling.llm.client import LLMError
from labeling.llm.endpoints import forbidden_params_check
from labeling.types import ProposedFinding

NOT_MENTIONED = "not mentioned"


class EnsembleMemberError(LLMError):
    """One member failed; ``raw_reply`` holds every member's reply so far (JSON by member)."""


ENSEMBLE_PARAMS = frozenset({"members", "min_votes", "concurrency"})


def _member(spec: dict, *, where: str):
    """The labeler of ``params.members[i]`` (``where``); an ``llm`` member picks a configured endpoint by
    name like an ``llm`` run (a URL or key is refused with the member's field named)."""
    if not isinstance(spec, dict):
        raise ApplicationError(
            'must be an object such as {"labeler": "llm", "endpoint": "default"}', field=where
        )
    spec = dict(spec)
    name = spec.pop("labeler", None)
    if name == "llm":
        from labeling.llm.labeler import LLMLabeler

        return LLMLabeler(spec, where=where)
    if name == "ensemble":
        raise ApplicationError("a member cannot be an ensemble", field=f"{where}.labeler")
    from labeling.labelers import labeler_for

    try:
        return labeler_for(name, spec)
    except ValueError as exc:
        raise ApplicationError(str(exc), field=f"{where}.labeler") from exc


def _member_label(labeler, taken: set[str]) -> str:
    base = f"{labeler.name}:{labeler.model_name}" if labeler.model_name else labeler.name
    label, n = base, 2
    while label in taken:
        label, n = f"{base}#{n}", n + 1
    taken.add(label)
    return label


class EnsembleLabeler:
    name = "ensemble"

    def __init__(self, params: dict | None = None, *, members: list | None = None):
        params = dict(params or {})
        self.params = params
        if members is None:
            forbidden_params_check(params)
            for key in params:
                if key not in ENSEMBLE_PARAMS:
                    accepted = ", ".join(sorted(ENSEMBLE_PARAMS))
                    raise ApplicationError(
                        f"unknown parameter of the ensemble labeler; accepted: {accepted}",
                        field=f"params.{key}",
                    )
            specs = params.get("members") or []
            if not isinstance(specs, list) or len(specs) < 2:
                raise ValueError("ensemble: params['members'] needs at least two labelers")
            members = [_member(spec, where=f"params.members[{i}]") for i, spec in enumerate(specs)]
        taken: set[str] = set()
        self.members = [(_member_label(m, taken), m) for m in members]
        self.min_votes = int(params.get("min_votes", 1))
        self.version = "ensemble-1.0[" + ",".join(f"{lbl}={m.version}" for lbl, m in self.members) + "]"
        self.prompt_version = ",".join(m.prompt_version for _, m in self.members if m.prompt_version)
        self.model_name = "+".join(m.model_name for _, m in self.members if m.model_name)[:128]
        self.concurrency = max(getattr(m, "concurrency", 1) for _, m in self.members)

    def prefetch(self, sections_list, *, schema: str) -> None:
        for _, member in self.members:
            if hasattr(member, "prefetch"):
                member.prefetch(sections_list, schema=schema)

    @contextmanager
    def batch(self):
        with ExitStack() as stack:
            for _, member in self.members:
                if hasattr(member, "batch"):
                    stack.enter_context(member.batch())
            yield self

    def label(self, sections: dict[str, str], *, schema: str) -> LabelResult:
        outcomes: list[tuple[str, LabelResult]] = []
        for label, member in self.members:
            try:
                outcomes.append((label, member.label(sections, schema=schema)))
            except Exception as exc:
                # a partial vote is not the ensemble the run asked for: the report fails and is retried
                raw = {lbl: r.raw_reply for lbl, r in outcomes}
                raw[label] = getattr(exc, "raw_reply", "")
                raise EnsembleMemberError(
                    f"ensemble member {label} failed: {type(exc).__name__}: {exc}", raw_reply=_json(raw)
                ) from exc
        proposals = vote(outcomes, min_votes=self.min_votes)
        return LabelResult(
            proposals=proposals,
            raw_reply=_json({lbl: r.raw_reply for lbl, r in outcomes if r.raw_reply}),
            tokens_in=sum(r.tokens_in for _, r in outcomes),
            tokens_out=sum(r.tokens_out for _, r in outcomes),
            cost=sum(r.cost for _, r in outcomes),
            warnings=[f"{lbl}: {w}" for lbl, r in outcomes for w in r.warnings],
        )


def _json(value) -> str:
    import json

    return json.dumps(value) if value else ""


def vote(outcomes: list[tuple[str, LabelResult]], *, min_votes: int = 1) -> list[ProposedFinding]:
    """Merge the members' proposals into one list, one proposal per finding, with votes."""
    voters = [label for label, _ in outcomes]
    # clusters: [(code, section, start, end), {member: [proposal, ...]}], in order of first appearance
    clusters: list[list] = []
    for label, result in outcomes:
        for p in result.proposals:
            for cluster in clusters:
                code, section, start, end = cluster[0]
                if code == p.code and section == p.section and p.start < end and start < p.end:
                    cluster[0] = (code, section, min(start, p.start), max(end, p.end))
                    cluster[1].setdefault(label, []).append(p)
                    break
            else:
                clusters.append([(p.code, p.section, p.start, p.end), {label: [p]}])
    merged = []
    for _, by_member in clusters:
        if len(by_member) < min_votes:
            continue
        votes = {}
        for label in voters:
            proposals = by_member.get(label)
            if not proposals:
                votes[label] = NOT_MENTIONED
            else:
                assertions = {p.assertion for p in proposals}
                votes[label] = assertions.pop() if len(assertions) == 1 else "uncertain"
        winner = _majority([v for v in votes.values() if v != NOT_MENTIONED])
        base = next(
            (p for label in voters for p in by_member.get(label, []) if p.assertion == winner),
            next(iter(by_member.values()))[0],
        )
        extra = dict(base.extra)
        extra["votes"] = votes
        extra["disagreement"] = len(set(votes.values())) > 1
        merged.append(
            ProposedFinding(
                phrase=base.phrase,
                section=base.section,
                start=base.start,
                end=base.end,
                assertion=winner,
                code=base.code,
                laterality=base.laterality,
                location=base.location,
                size_mm=base.size_mm,
                extra=extra,
            )
        )
    return merged


def _majority(assertions: list[str]) -> str:
    counts = Counter(assertions).most_common()
    top = [a for a, n in counts if n == counts[0][1]]
    if len(top) == 1:
        return top[0]
    return "uncertain"  # a tie (e.g. present vs absent) is uncertain
