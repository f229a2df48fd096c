"""An import job: the picked studies' series found (QIDO-RS), retrieved (WADO-RS, several series at once)
into the job's scratch folder in bounded batches, and fed to the ingest of files
(``studies.services.scans.scans_ingest``: de-identification, canonical volumes, all or nothing per series,
duplicates skipped by SOP Instance UID).

What stays bounded: at most ``PACS_BATCH_INSTANCES`` instances wait on disk (a series is never split), each
retrieval thread holds one instance in memory at a time (``iter_series`` streams the multipart body), and a
batch's files are removed once ingested. So memory and disk are flat in the number of studies.

A series is retrieved whole or not at all: a broken connection, a truncated body, a count or set of SOP
Instance UIDs other than QIDO-RS listed, or a 404 (the study deleted meanwhile) drops what came of it,
and the series is named in the job's errors; transient failures (connection, 429/5xx, timeouts) are tried
``PACS_REQUEST_TRIES`` times. A series whose instances are all stored already is skipped before any
retrieval, so that running an import again completes it without duplicates. Reports waiting for their
study (imported earlier with their accession number as id, link ``accession``) are linked once studies
were stored, as ``reports_link`` does for files.

Names: the job row (every member reads jobs) names series and studies by their remapped UIDs, the ones the
platform stores; the ``PacsImport`` row (managers only) keeps the original ones per study.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from django.conf import settings
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from core.errors import public_message
from pacs.client import PacsError, client_for, error_from, pacs_call
from pacs.models import PacsImport, PacsSeriesLink
from studies import pseudonyms
from studies.models import Scan, ScanSource
from studies.services.reports import reports_link
from studies.services.scans import scans_ingest

log = logging.getLogger(__name__)

Progress = Callable[[float, str, dict[str, int]], None]


@dataclass
class SeriesPlan:
    """One series to import: original UIDs (from QIDO-RS), the remapped ones, what QIDO-RS listed."""

    study_uid: str
    series_uid: str
    modality: str
    sop_uids: list[str]
    remapped: str = ""
    remapped_study: str = ""

    @property
    def label(self) -> str:
        return f"series {self.remapped} ({self.modality or '?'}, {len(self.sop_uids)} instances)"


@dataclass
class Tally:
    """What the import did, as the job row and the import row record it."""

    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    instances: int = 0
    bytes: int = 0
    retrieve_seconds: float = 0.0
    ingest_seconds: float = 0.0
    reports_linked: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    outcome: dict[str, dict[str, Any]] = field(default_factory=dict)

    def study(self, plan_or_uid) -> dict[str, Any]:
        uid = plan_or_uid if isinstance(plan_or_uid, str) else plan_or_uid.study_uid
        return self.outcome.setdefault(uid, {"stored": [], "duplicates": [], "failed": []})

    def fail(self, plan: SeriesPlan, reason: str) -> None:
        self.failed += 1
        self.errors.append({"file": plan.label, "reason": reason})
        self.study(plan)["failed"].append({"series_uid": plan.series_uid, "reason": reason})

    def counts(self) -> dict[str, int]:
        return {
            "series_stored": self.stored,
            "series_duplicates": self.duplicates,
            "series_failed": self.failed,
            "instances_retrieved": self.instances,
            "bytes_retrieved": self.bytes,
            "reports_linked": self.reports_linked,
        }


def import_run(*, pacs_import: PacsImport, scratch: Path, progress: Progress | None = None) -> Tally:
    """Run ``pacs_import`` (its source and studies) with ``scratch`` as the job's scratch folder.

    Raises ``PacsError`` only when no study could even be listed (the source down, the credentials
    refused): then nothing was stored and the job fails with that reason. Anything narrower is a study's
    or a series' error in the tally, the others going on."""
    source = pacs_import.source
    project = pacs_import.project
    report = progress or (lambda fraction, message, counts: None)
    tally = Tally()
    plans, listing_errors = _plan(pacs_import, tally)
    if not plans and listing_errors and len(listing_errors) == len(pacs_import.study_uids):
        raise listing_errors[0]
    secret = project.deid_secret
    for plan in plans:
        plan.remapped = pseudonyms.uid_remap(secret, plan.series_uid)
        plan.remapped_study = pseudonyms.uid_remap(secret, plan.study_uid)
    todo = [p for p in plans if not _already_stored(pacs_import, p, tally)]
    total = sum(len(p.sop_uids) for p in todo) or 1
    done = 0
    report(0.0, f"{len(todo)} series to retrieve, {tally.duplicates} stored already", tally.counts())
    for batch in _batches(todo, settings.PACS_BATCH_INSTANCES):
        folder = scratch / f"batch-{time.monotonic_ns()}"
        folder.mkdir(parents=True)
        try:
            started = time.perf_counter()
            fetched = _retrieve_batch(source, batch, folder, tally)
            tally.retrieve_seconds += time.perf_counter() - started
            done += sum(len(p.sop_uids) for p in batch) // 2
            report(
                done / total,
                f"retrieved {tally.instances} instances; storing {len(fetched)} series",
                tally.counts(),
            )
            started = time.perf_counter()
            _ingest_batch(pacs_import, fetched, folder, tally)
            tally.ingest_seconds += time.perf_counter() - started
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        done += sum(len(p.sop_uids) for p in batch) - sum(len(p.sop_uids) for p in batch) // 2
        report(done / total, f"stored {tally.stored} series, {tally.failed} failed", tally.counts())
    if tally.stored:
        # reports imported before their studies, with the accession as their id, find them now
        tally.reports_linked = reports_link(project=project, link="accession")
    for uid in pacs_import.study_uids:
        entry = tally.study(uid)
        entry["status"] = (
            "failed"
            if entry["failed"] and not (entry["stored"] or entry["duplicates"])
            else ("partial" if entry["failed"] else "done")
        )
    return tally


def _plan(pacs_import: PacsImport, tally: Tally) -> tuple[list[SeriesPlan], list[PacsError]]:
    """The series of the picked studies (of the import's modality when it has one), with their instances."""
    client = client_for(pacs_import.source)
    plans: list[SeriesPlan] = []
    errors: list[PacsError] = []
    filters = {"Modality": pacs_import.modality} if pacs_import.modality else None
    for k, study_uid in enumerate(pacs_import.study_uids, start=1):
        what = f"study {k} of {len(pacs_import.study_uids)}"
        try:
            with pacs_call(what):
                series = client.search_for_series(
                    study_uid, search_filters=filters, fields=["Modality", "SeriesInstanceUID"]
                )
                found = []
                for item in series:
                    series_uid = item["0020000E"]["Value"][0]
                    modality = (item.get("00080060", {}).get("Value") or [""])[0]
                    instances = client.search_for_instances(study_uid, series_uid, fields=["SOPInstanceUID"])
                    sops = [i["00080018"]["Value"][0] for i in instances]
                    found.append(SeriesPlan(study_uid, series_uid, modality, sops))
        except PacsError as exc:
            errors.append(exc)
            entry = tally.study(study_uid)
            entry["failed"].append({"series_uid": "", "reason": exc.message})
            tally.errors.append({"file": what, "reason": exc.message})
            continue
        if not found:
            reason = f"{what}: no series" + (
                f" of modality {pacs_import.modality}" if pacs_import.modality else ""
            )
            tally.study(study_uid)["failed"].append({"series_uid": "", "reason": reason})
            tally.errors.append({"file": what, "reason": reason})
        plans.extend(p for p in found if p.sop_uids)
    return plans, errors


def _already_stored(pacs_import: PacsImport, plan: SeriesPlan, tally: Tally) -> bool:
    """Whether every instance of ``plan`` is stored in the project (then it is a duplicate, not retrieved)."""
    secret = pacs_import.project.deid_secret
    wanted = {pseudonyms.uid_remap(secret, s) for s in plan.sop_uids}
    stored = set(
        ScanSource.objects.filter(project=pacs_import.project, sop_uid__in=wanted).values_list(
            "sop_uid", flat=True
        )
    )
    if stored != wanted:
        return False
    scan = Scan.objects.filter(project=pacs_import.project, series_uid=plan.remapped).first()
    tally.duplicates += 1
    tally.study(plan)["duplicates"].append(
        {"series_uid": plan.series_uid, "scan_id": scan.pk if scan else None}
    )
    if scan is not None:
        _link(pacs_import, plan, scan)
    return True


def _batches(plans: list[SeriesPlan], limit: int) -> list[list[SeriesPlan]]:
    batches: list[list[SeriesPlan]] = []
    size = 0
    for plan in plans:
        if batches and size + len(plan.sop_uids) <= max(1, limit):
            batches[-1].append(plan)
            size += len(plan.sop_uids)
        else:
            batches.append([plan])
            size = len(plan.sop_uids)
    return batches


_local = threading.local()


def _thread_client(source):
    """One client (one session, one connection pool) per retrieval thread."""
    client = getattr(_local, "client", None)
    if client is None or getattr(_local, "source_pk", None) != source.pk:
        _local.client, _local.source_pk = client_for(source), source.pk
    return _local.client


def _retrieve_batch(source, batch: list[SeriesPlan], folder: Path, tally: Tally) -> list[SeriesPlan]:
    """Retrieve the batch's series in parallel; returns those that came whole (the rest: ``tally``)."""
    workers = max(1, min(settings.PACS_RETRIEVE_WORKERS, len(batch)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wado") as pool:
        results = list(pool.map(lambda p: _retrieve_series(source, p, folder / p.remapped), batch))
    fetched = []
    for plan, (ok, reason, n_bytes) in zip(batch, results, strict=True):
        if ok:
            fetched.append(plan)
            tally.instances += len(plan.sop_uids)
            tally.bytes += n_bytes
        else:
            tally.fail(plan, reason)
    return fetched


def _retrieve_series(source, plan: SeriesPlan, target: Path) -> tuple[bool, str, int]:
    """``plan``'s instances into ``target``, whole: (True, "", bytes) or (False, reason, 0), nothing left."""
    tries = max(1, settings.PACS_REQUEST_TRIES)
    reason, made = "", 0
    for attempt in range(1, tries + 1):
        made = attempt
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            n_bytes = _stream_series(_thread_client(source), plan, target)
            return True, "", n_bytes
        except Exception as exc:  # noqa: BLE001 - named below; anything unknown is the series' failure too
            try:
                err = error_from(exc, what=f"retrieval of {plan.label}")
            except Exception:  # noqa: BLE001
                log.exception("retrieval of %s failed", plan.label)
                err = PacsError(f"retrieval of {plan.label}: {public_message(exc)}")
            reason = err.message
            _local.client = None  # a broken connection: a fresh session for the next try
            if not err.transient or attempt == tries:
                break
            time.sleep(settings.PACS_RETRY_WAIT_MS / 1000.0 * 2 ** (attempt - 1))
    shutil.rmtree(target, ignore_errors=True)
    return False, reason + (f" (after {made} tries)" if made > 1 else ""), 0


def _stream_series(client, plan: SeriesPlan, target: Path) -> int:
    """Write each instance of the series as it arrives (the PACS's bytes, as they came); check the set of
    SOP Instance UIDs against what QIDO-RS listed (read from each file's meta group, which is all that
    is parsed here; a file without one has its header read)."""
    wanted = set(plan.sop_uids)
    seen: set[str] = set()
    n_bytes = 0
    for i, part in enumerate(client.iter_series_parts(plan.study_uid, plan.series_uid), start=1):
        path = target / f"{i:06d}.dcm"
        path.write_bytes(part)
        size = len(part)
        del part
        sop = _sop_uid(path)
        if sop not in wanted:
            raise PacsError(f"retrieval of {plan.label}: an instance QIDO-RS did not list", transient=True)
        if sop in seen:  # sent twice: kept once
            path.unlink()
            continue
        seen.add(sop)
        n_bytes += size
    if seen != wanted:
        raise PacsError(
            f"retrieval of {plan.label}: {len(seen)} of {len(wanted)} instances came (a partial retrieval)",
            transient=True,
        )
    return n_bytes


def _sop_uid(path: Path) -> str:
    try:
        sop = str(read_file_meta_info(path).get("MediaStorageSOPInstanceUID", "") or "")
    except (InvalidDicomError, OSError, ValueError, EOFError):
        sop = ""
    if not sop:
        try:
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True
            )
            sop = str(header.get("SOPInstanceUID", "") or "")
        except (InvalidDicomError, OSError, ValueError, EOFError):
            sop = ""
    return sop


def _ingest_batch(pacs_import: PacsImport, fetched: list[SeriesPlan], folder: Path, tally: Tally) -> None:
    """The ingest of files on the batch's series folders; its outcome mapped back to the series."""
    if not fetched:
        return
    summary = scans_ingest(
        project=pacs_import.project, paths=[folder / p.remapped for p in fetched], workdir=folder
    )
    by_folder = {p.remapped: p for p in fetched}
    prefix = f"{folder}{os.sep}"

    def plan_of(item: dict[str, Any]) -> SeriesPlan | None:
        name = str(item.get("file", "")).replace(prefix, "")
        return by_folder.get(name.split("/", 1)[0].split(os.sep, 1)[0])

    stored_series = {item["series_uid"] for item in summary.stored}
    for plan in fetched:
        if plan.remapped in stored_series:
            scan = Scan.objects.filter(project=pacs_import.project, series_uid=plan.remapped).first()
            tally.stored += 1
            tally.study(plan)["stored"].append(
                {"series_uid": plan.series_uid, "scan_id": scan.pk if scan else None}
            )
            if scan is not None:
                _link(pacs_import, plan, scan)
    for item in summary.duplicates:
        plan = plan_of(item)
        if plan is not None:
            tally.duplicates += 1
            tally.study(plan)["duplicates"].append(
                {"series_uid": plan.series_uid, "scan_id": item.get("scan_id")}
            )
    for item in summary.errors:
        plan = plan_of(item)
        reason = str(item.get("reason", "")).replace(prefix, "")
        if plan is not None:
            tally.fail(plan, f"ingest: {reason}")
        else:
            tally.errors.append({"file": str(item.get("file", "")).replace(prefix, ""), "reason": reason})


def _link(pacs_import: PacsImport, plan: SeriesPlan, scan: Scan) -> None:
    """The scan's original UIDs, kept only where the project keeps the identity map (for store-back)."""
    if not pacs_import.project.keep_identity_map:
        return
    PacsSeriesLink.objects.update_or_create(
        scan=scan,
        defaults={
            "project": pacs_import.project,
            "source": pacs_import.source,
            "study_uid": plan.study_uid,
            "series_uid": plan.series_uid,
        },
    )
