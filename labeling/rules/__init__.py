"""The offline ``rules`` labeler: findings proposed from report text by sentence splitting, a synonym
lexicon and NegEx-style negation/uncertainty scope. Pure Python, no database, no network.

``rules_label(sections, schema=...)`` returns ``ProposedFinding`` objects whose ``section``/``start``/``end``
point at the exact sentence; ``chexpert_row(proposals)`` folds CheXpert proposals into one labeler CSV row.
"""

from labeling.rules.attributes import laterality, location, size_mm
from labeling.rules.chexpert import mentions
from labeling.rules.negation import assertion_of, clause_bounds, mask_sentence
from labeling.rules.sentences import section_items, split_sentences
from labeling.types import CHEXPERT_OBSERVATIONS, SCHEMAS, ProposedFinding

RULES_VERSION = "rules-1.2"

__all__ = ["RULES_VERSION", "chexpert_row", "rules_label", "sentences_of"]


def sentences_of(sections: dict) -> list[tuple[str, str, int, int]]:
    """(section, section text, start, end) of every sentence proposals may come from."""
    out = []
    for name, text in section_items(_as_text(sections)):
        for start, end in split_sentences(text):
            out.append((name, text, start, end))
    return out


def _as_text(sections: dict) -> dict:
    """Bytes values are decoded (UTF-8, undecodable bytes replaced); other values pass through."""
    if not isinstance(sections, dict):
        return {}
    out = {}
    for name, text in sections.items():
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", errors="replace")
        out[name] = text
    return out


def rules_label(sections: dict[str, str], *, schema: str) -> list[ProposedFinding]:
    """Proposed findings of one report. ``sections`` maps section name to text; proposals come from every
    section except indication, comparison, history and technique. ``schema`` is one of ``SCHEMAS``."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown label schema {schema!r}; expected one of {SCHEMAS}")
    if schema == "rexgroundingct":
        from labeling.rules.ct import ct_label

        return ct_label(sentences_of(sections))
    if schema == "petct":
        from labeling.rules.pet import pet_label

        return pet_label(sentences_of(sections))
    return _chexpert_label(sentences_of(sections))


def _chexpert_label(sentences: list[tuple[str, str, int, int]]) -> list[ProposedFinding]:
    out: list[ProposedFinding] = []
    for name, text, start, end in sentences:
        sentence = text[start:end]
        low = sentence.lower()
        masked = mask_sentence(low)
        seen = set()
        for obs, a, b, kind in sorted(mentions(low), key=lambda x: x[1]):
            if kind == "absent":
                assertion = "absent"
            else:
                assertion = assertion_of(low, a, b, masked)
                if kind == "uncertain-mention" and assertion == "present":
                    assertion = "uncertain"
            if (obs, assertion) in seen:
                continue
            seen.add((obs, assertion))
            c0, c1 = clause_bounds(masked, a, b)
            clause = sentence[c0:c1]
            out.append(
                ProposedFinding(
                    phrase=sentence[a:b],
                    section=name,
                    start=start,
                    end=end,
                    assertion=assertion,
                    code=obs,
                    laterality=laterality(clause),
                    location=location(clause),
                    size_mm=size_mm(clause),
                )
            )
    return out


_RANK = {1.0: 3, -1.0: 2, 0.0: 1}
_VALUE = {"present": 1.0, "uncertain": -1.0, "absent": 0.0}


def chexpert_row(proposals: list[ProposedFinding]) -> dict[str, float | None]:
    """One CheXpert CSV row: 1.0 positive, 0.0 negative, -1.0 uncertain, None not mentioned. Across mentions
    of one observation positive beats uncertain beats negative. "No Finding" is 1.0 when no observation
    other than Support Devices is positive or uncertain, else None (the CheXpert labeler's convention)."""
    row: dict[str, float | None] = {obs: None for obs in CHEXPERT_OBSERVATIONS}
    for p in proposals:
        if p.code not in row or p.code == "No Finding":
            continue
        value = _VALUE[p.assertion]
        current = row[p.code]
        if current is None or _RANK[value] > _RANK[current]:
            row[p.code] = value
    findings = [obs for obs in CHEXPERT_OBSERVATIONS if obs not in ("No Finding", "Support Devices")]
    row["No Finding"] = None if any(row[obs] in (1.0, -1.0) for obs in findings) else 1.0
    return row
