"""Report payload and section splitting shared by the report readers (pure, no database)."""

import codecs
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

SECTIONS = ("indication", "comparison", "findings", "impression")

# Heading (lower case, single spaces) -> section, or "extra:<key>" for headings kept in ``extra``.
HEADINGS: dict[str, str] = {
    **dict.fromkeys(
        [
            "indication", "indications", "clinical indication", "clinical indications", "history",
            "clinical history", "clinical information", "clinical info", "clinical data", "clinical details",
            "reason for exam", "reason for examination", "reason for study", "reason for referral",
        ],
        "indication",
    ),
    **dict.fromkeys(["comparison", "comparisons", "comparison study", "comparison studies"], "comparison"),
    **dict.fromkeys(["findings", "finding"], "findings"),
    **dict.fromkeys(["impression", "impressions", "conclusion", "conclusions"], "impression"),
    "technique": "extra:technique",
    "procedure": "extra:procedure",
    "examination": "extra:examination",
    "exam": "extra:examination",
    "recommendation": "extra:recommendation",
    "recommendations": "extra:recommendation",
    "addendum": "extra:addendum",
}  # fmt: skip
# DICOM SR section concept names (CID 7001 and common vendor names) beyond the text headings.
SR_HEADINGS: dict[str, str] = {
    **HEADINGS,
    "request": "indication",
    "clinical presentation": "indication",
    "previous findings": "comparison",
    "prior procedure descriptions": "comparison",
    "summary": "impression",
    "current procedure descriptions": "extra:technique",
}


def _heading_alternation(upper: bool = False) -> str:
    names = sorted(HEADINGS, key=len, reverse=True)
    words = [[w.upper() if upper else w for w in name.split()] for name in names]
    return "|".join(r"[ \t]+".join(re.escape(w) for w in name) for name in words)


# At the start of a line, any case: "Findings:" (text may follow) or "FINDINGS" alone on its line.
_LINE_HEADING = re.compile(rf"^[ \t]*(?P<h>{_heading_alternation()})[ \t]*(?::|(?=[ \t]*$))", re.I | re.M)
# Inside a line, upper case with a colon only: "... normal. IMPRESSION: No acute disease."
_INLINE_HEADING = re.compile(rf"(?<=\s)(?P<h>{_heading_alternation(upper=True)}):")
_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".txt")


@dataclass
class ReportData:
    """One report as read from its source.

    ``sections`` has the keys of ``SECTIONS`` (empty strings where absent); ``checksum`` is the sha256 of
    ``raw_text`` (utf-8); ``link_keys`` holds what the report can be linked by (``file``, ``row``, and
    for SR the original ``accession``, ``study_uid`` and ``sop_uid``: identifiers, never to be stored);
    ``scrub_tokens`` the identifier tokens of an SR's own header.
    """

    external_id: str
    source: str  # csv, text, dicom-sr
    source_name: str
    raw_text: str
    sections: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)
    checksum: str = ""
    link_keys: dict[str, str] = field(default_factory=dict)
    scrub_tokens: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sections = {name: self.sections.get(name, "") for name in SECTIONS}
        if not self.checksum:
            self.checksum = hashlib.sha256(self.raw_text.encode("utf-8")).hexdigest()


def norm_heading(text: str) -> str:
    return " ".join(text.lower().split())


def clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def join(old: str, new: str) -> str:
    return f"{old}\n\n{new}" if old else new


def report_sections(text: str) -> dict[str, Any]:
    """Split free report text by its headings.

    Returns ``{"indication", "comparison", "findings", "impression": str, "extra": {key: str}}``.
    Headings are recognised case-insensitively at the start of a line (with a colon, or alone on their
    line) and in upper case with a colon inside a line. TECHNIQUE, PROCEDURE, EXAM(INATION),
    RECOMMENDATION(S) and ADDENDUM go to ``extra``. Text without any heading is the findings; text
    before the first heading is the findings when no FINDINGS heading follows, else ``extra["preamble"]``.
    """
    out: dict[str, Any] = {name: "" for name in SECTIONS}
    extra: dict[str, str] = {}
    out["extra"] = extra
    text = clean(text or "")
    matches = sorted(
        [*_LINE_HEADING.finditer(text), *_INLINE_HEADING.finditer(text)], key=lambda m: m.start()
    )
    spans: list[re.Match] = []
    for match in matches:
        if not spans or match.start() >= spans[-1].end():
            spans.append(match)
    if not spans:
        out["findings"] = text
        return out
    targets = [HEADINGS[norm_heading(m.group("h"))] for m in spans]
    preamble = text[: spans[0].start()].strip()
    if preamble:
        if "findings" in targets:
            extra["preamble"] = preamble
        else:
            out["findings"] = preamble
    for i, (match, target) in enumerate(zip(spans, targets)):
        end = spans[i + 1].start() if i + 1 < len(spans) else len(text)
        body = text[match.end() : end].strip()
        if not body:
            continue
        if target.startswith("extra:"):
            key = target.removeprefix("extra:")
            extra[key] = join(extra.get(key, ""), body)
        else:
            out[target] = join(out[target], body)
    return out


def decode_text(data: bytes) -> tuple[str, bool]:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), False
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252"), True
        except UnicodeDecodeError:
            return data.decode("latin-1"), True


def strip_image_suffix(name: str) -> str:
    """``valid_1_a_2.nii.gz`` -> ``valid_1_a_2`` (for matching report ids to scan names)."""
    lowered = name.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name
