"""Linking reports to studies (by id, file-name pattern, accession number or study UID) and scrubbing
linked reports of the identifiers found in their study's DICOM headers."""

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from core.models import Project
from studies.ingest.reports import SECTIONS, ReportData, strip_image_suffix
from studies.models import Report, Scan, Study
from studies.pseudonyms import accession_hash, uid_remap
from studies.scrub import scrub_plain, scrub_text

LINK_MODES = ("id", "pattern", "accession", "study-uid")


@dataclass
class _Keys:
    """What one report can be linked by: its id, its file name and pseudonymised header values."""

    external_id: str
    source: str
    file: str = ""
    accession_hash: str = ""
    study_uid: str = ""  # remapped


def _compile(link: str, link_pattern: str | None) -> re.Pattern | None:
    if link not in LINK_MODES:
        raise ValueError(f"unknown link mode {link!r}; choose one of {', '.join(LINK_MODES)}")
    if link == "pattern" and not link_pattern:
        raise ValueError("link 'pattern' needs link_pattern, a regular expression with one group")
    if not link_pattern:
        return None
    try:
        pattern = re.compile(link_pattern)
    except re.error as exc:
        raise ValueError(f"link_pattern is not a regular expression: {exc}") from exc
    if pattern.groups < 1:
        raise ValueError("link_pattern needs one group, e.g. r'CXR(\\d+)_'")
    return pattern


class _Resolver:
    """Finds the study of a report; loads the project's study and scan keys once, on first use."""

    def __init__(self, project: Project, link: str, pattern: re.Pattern | None):
        self.project, self.link, self.pattern = project, link, pattern
        self._index: dict[str, set[int]] | None = None

    def _extract(self, name: str) -> str | None:
        match = self.pattern.search(name) if self.pattern and name else None
        return match.group(1) if match and match.group(1) else None

    def _build(self) -> dict[str, set[int]]:
        index: dict[str, set[int]] = defaultdict(set)
        studies = Study.objects.filter(project=self.project)
        if self.link == "accession":
            for sid, value in studies.exclude(accession_hash="").values_list("id", "accession_hash"):
                index[value].add(sid)
        elif self.link == "study-uid":
            for sid, value in studies.values_list("id", "study_uid"):
                index[value].add(sid)
        else:
            for sid, value in studies.exclude(external_id="").values_list("id", "external_id"):
                index[value].add(sid)
            for name, sid in Scan.objects.filter(project=self.project).values_list("name", "study_id"):
                if name:
                    index[name].add(sid)
                    extracted = self._extract(name)
                    if extracted:
                        index[extracted].add(sid)
        return index

    def candidates(self, keys: _Keys) -> set[int]:
        if self._index is None:
            self._index = self._build()
        if self.link == "accession":
            return set(self._index.get(keys.accession_hash, ())) if keys.accession_hash else set()
        if self.link == "study-uid":
            return set(self._index.get(keys.study_uid, ())) if keys.study_uid else set()
        wanted = [keys.external_id, strip_image_suffix(keys.external_id)]
        if self.link == "pattern" and keys.source != "csv":
            extracted = self._extract(keys.file)
            wanted = [extracted] if extracted else wanted
        found: set[int] = set()
        for key in wanted:
            found |= self._index.get(key, set())
        return found


def _keys_of(data: ReportData, secret: str, link: str) -> tuple[str, _Keys]:
    """The id to store (pseudonymised where it is an identifier) and the report's link keys."""
    keys = _Keys(external_id=data.external_id, source=data.source, file=data.link_keys.get("file", ""))
    stored_id = data.external_id
    if data.source == "dicom-sr":
        if data.link_keys.get("accession"):
            keys.accession_hash = accession_hash(secret, data.link_keys["accession"])
            stored_id = "acc-" + keys.accession_hash[:40]
        else:
            stored_id = uid_remap(secret, data.link_keys.get("sop_uid") or data.external_id)
        if data.link_keys.get("study_uid"):
            keys.study_uid = uid_remap(secret, data.link_keys["study_uid"])
    elif link == "accession":
        keys.accession_hash = accession_hash(secret, data.external_id)
        stored_id = "acc-" + keys.accession_hash[:40]
    elif link == "study-uid":
        keys.study_uid = uid_remap(secret, data.external_id)
        stored_id = keys.study_uid
    keys.external_id = stored_id if data.source == "dicom-sr" else data.external_id
    return stored_id, keys


def _keys_of_stored(report: Report, secret: str, link: str) -> _Keys:
    stored = (report.extra or {}).get("link_keys") or {}
    keys = _Keys(
        external_id=report.external_id,
        source=report.source,
        file=stored.get("file") or report.source_name,
        accession_hash=stored.get("accession_hash", ""),
        study_uid=stored.get("study_uid", ""),
    )
    raw_id = report.source == "csv" and not report.external_id.startswith(("acc-", "2.25."))
    if link == "accession" and not keys.accession_hash and raw_id:
        keys.accession_hash = accession_hash(secret, report.external_id)
    if link == "study-uid" and not keys.study_uid and raw_id:
        keys.study_uid = uid_remap(secret, report.external_id)
    return keys


def _scrub(value: Any, secret: str, hashes: list[str], tokens: set[str]) -> tuple[Any, int]:
    """Scrub a string (or the strings inside a dict or list) of header tokens and study hashes."""
    if isinstance(value, str):
        text, n = scrub_plain(value, tokens=tokens) if tokens else (value, 0)
        text, m = scrub_text(text, secret=secret, hashes=hashes) if hashes else (text, 0)
        return text, n + m
    if isinstance(value, dict):
        out, total = {}, 0
        for key, item in value.items():
            out[key], n = _scrub(item, secret, hashes, tokens)
            total += n
        return out, total
    if isinstance(value, list):
        pairs = [_scrub(item, secret, hashes, tokens) for item in value]
        return [p[0] for p in pairs], sum(p[1] for p in pairs)
    return value, 0


_TEXT_FIELDS = ("raw_text", *SECTIONS, "source_name")


def _scrub_report(report: Report, study: Study | None, tokens: set[str], secret: str) -> int:
    """Scrub the report's text fields and ``extra`` in place; returns the number of replacements."""
    hashes = list(study.identifier_hashes or []) if study else []
    total = 0
    for name in _TEXT_FIELDS:
        value, n = _scrub(getattr(report, name), secret, hashes, tokens)
        setattr(report, name, value)
        total += n
    own = {k: v for k, v in report.extra.items() if k != "scrubbed"}
    scrubbed, n = _scrub(own, secret, hashes, tokens)
    report.extra = {**report.extra, **scrubbed, "scrubbed": int(report.extra.get("scrubbed", 0)) + n + total}
    return n + total


def _pick(candidates: set[int], label: str, warnings: list[str]) -> int | None:
    if not candidates:
        return None
    if len(candidates) > 1:
        warnings.append(f"report {label} matches {len(candidates)} studies; linked to the first")
    return min(candidates)
