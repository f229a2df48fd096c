"""Store-back: an accepted finding's mask sent to the source it came from as a DICOM SEG (STOW-RS).

The SEG is made with highdicom, as the release export makes its SEGs
(``releases.formats.dicom_segmentation``: the same segment description, codes from
``releases.formats.dicom_codes``), but against the series as the PACS has it: its instances' metadata are
retrieved (WADO-RS metadata, no pixels) under the original UIDs the project's identity map kept
(``PacsSeriesLink``); each instance is matched to its slice of the canonical
volume by its remapped SOP Instance UID (``ScanSource.slice_index``). Frame of instance k = mask[:, :, k]
transposed to (rows = Y, columns = X). The SEG's own UIDs are derived from the source, finding and version,
so that sending it again replaces nothing and duplicates nothing in the PACS.

Off unless the source says ``store_back`` (which needs the identity map). Each send is a ``PacsStoreBack``
row: stored, or failed with the reason and its number of tries; the sweep (beat, every 5 minutes; or
``manage.py pacs_store_back``) sends what is due and tries failed sends again up to ``PACS_STORE_BACK_TRIES``.
"""

from __future__ import annotations

import datetime
import logging
import warnings
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from django.conf import settings
from django.db.models import F
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from annotation.models import Annotation, Finding, FindingStatus
from annotation.readers import version_mask
from annotation.versions import groundings
from core.errors import ApplicationError, public_message
from pacs.client import client_for, pacs_call
from pacs.models import PacsSeriesLink, PacsSource, PacsStoreBack, StoreBackStatus
from releases.formats.dicom_segmentation import segment_description
from releases.labels import class_category
from releases.records import LabelRecord
from studies import pseudonyms
from studies.models import ScanSource

log = logging.getLogger(__name__)

SOFTWARE = "groundlab pacs store-back 1"


@dataclass
class Sent:
    series_uid: str
    sop_uid: str


def _uid(*parts: str) -> str:
    return str(generate_uid(entropy_srcs=["groundlab-pacs-store-back", *parts]))


def _source_images(client, link: PacsSeriesLink) -> list[Dataset]:
    """The series' instances as the PACS describes them (WADO-RS metadata), without bulk data."""
    with pacs_call(f"metadata of the series of scan {link.scan_id}"):
        items = client.retrieve_series_metadata(link.study_uid, link.series_uid)
    out = []
    for item in items:
        item = {
            tag: value
            for tag, value in item.items()
            if "BulkDataURI" not in value and "InlineBinary" not in value
        }
        out.append(Dataset.from_json(item))
    return out


def seg_build(
    *, finding: Finding, annotation: Annotation, link: PacsSeriesLink, client
) -> hd.seg.Segmentation:
    """The SEG of ``annotation`` (a mask version of ``finding``) referencing the source's own series."""
    scan = finding.scan
    shape = tuple(int(n) for n in scan.shape)
    if len(shape) != 3:
        raise ApplicationError("store-back sends 3D masks only", field="scan")
    mask = version_mask(annotation, shape)
    if mask is None:
        raise ApplicationError(f"version {annotation.version} has no mask on the scan's grid", field="mask")
    sources = _source_images(client, link)
    secret = finding.project.deid_secret
    slices = dict(
        ScanSource.objects.filter(scan=scan).exclude(slice_index=None).values_list("sop_uid", "slice_index")
    )
    by_slice: dict[int, Dataset] = {}
    for ds in sources:
        k = slices.get(pseudonyms.uid_remap(secret, str(ds.SOPInstanceUID)))
        if k is not None:
            by_slice[int(k)] = ds
    depth = shape[2]
    if sorted(by_slice) != list(range(depth)):
        raise ApplicationError(
            f"the source's series has {len(by_slice)} of the scan's {depth} slices (changed on the PACS?)",
            field="series",
        )
    ordered = [by_slice[k] for k in range(depth)]
    frames = np.ascontiguousarray(mask.transpose(2, 1, 0))  # (Z, rows = Y, columns = X)
    label = LabelRecord(
        label_id=f"finding-{finding.pk}",
        text=finding.text,
        kind="mask",
        code=finding.code,
        category=class_category(finding.code),
        location=finding.location,
        laterality=finding.laterality,
        source="human",
    )
    key = [str(link.source_id), str(finding.pk), str(annotation.version)]
    now = timezone.now().astimezone(datetime.UTC).replace(tzinfo=None, microsecond=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = hd.seg.Segmentation(
            source_images=ordered,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment_description(1, f"finding-{finding.pk}", label)],
            series_instance_uid=_uid("series", *key),
            series_number=9000 + annotation.version % 1000,
            sop_instance_uid=_uid("instance", *key),
            instance_number=1,
            manufacturer="groundlab",
            manufacturer_model_name="groundlab pacs store-back",
            software_versions=SOFTWARE,
            device_serial_number="0",
            content_label="FINDING",
            content_description=f"finding {finding.pk} v{annotation.version}"[:64],
            series_description=f"Groundlab reviewed finding {finding.pk}"[:64],
            content_date=now.date(),
            content_time=now.time(),
            omit_empty_frames=bool(frames.any()),
        )
    seg.SegmentSequence[0].SegmentDescription = finding.text[:1024]
    return seg


def store_back_send(*, record: PacsStoreBack) -> PacsStoreBack:
    """Send ``record``'s finding version; the row records the outcome (stored, or failed with the reason)."""
    PacsStoreBack.objects.filter(pk=record.pk).update(tries=F("tries") + 1)
    record.refresh_from_db()
    finding = Finding.objects.select_related("scan", "project").get(pk=record.finding_id)
    try:
        link = PacsSeriesLink.objects.filter(scan_id=finding.scan_id, source=record.source).first()
        if link is None:
            raise ApplicationError(
                "the scan was not imported from this source with the identity map", field="scan"
            )
        annotation = Annotation.objects.get(finding=finding, version=record.version)
        client = client_for(record.source)
        seg = seg_build(finding=finding, annotation=annotation, link=link, client=client)
        with pacs_call(f"STOW-RS of finding {finding.pk}"):
            answer = client.store_instances([seg], study_instance_uid=link.study_uid)
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "")
            raise ApplicationError(f"the source refused the SEG (failure reason {reason})", field="source")
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row, tracebacks to the log
        if not isinstance(exc, ApplicationError):
            log.exception("store-back of finding %s failed", record.finding_id)
        record.status = StoreBackStatus.FAILED
        record.message = public_message(exc)[:500]
        record.save(update_fields=["status", "message", "updated_at"])
        return record
    record.status = StoreBackStatus.STORED
    record.message = ""
    record.seg_series_uid = str(seg.SeriesInstanceUID)
    record.seg_sop_uid = str(seg.SOPInstanceUID)
    record.save(update_fields=["status", "message", "seg_series_uid", "seg_sop_uid", "updated_at"])
    return record


def store_back_due(*, source: PacsSource) -> list[PacsStoreBack]:
    """Rows for the accepted mask versions of ``source``'s imported scans that are not stored yet (made
    where missing), failed ones with tries left included. A finding's mask version is its newest mask,
    whatever box was saved after it (``annotation.versions.groundings``)."""
    if not source.store_back or not source.project.keep_identity_map:
        return []
    findings = list(
        Finding.objects.filter(
            project=source.project,
            status=FindingStatus.ACCEPTED,
            scan__pacs_link__source=source,
            current_version__gt=0,
        ).order_by("id")
    )
    grounded = groundings(findings)
    due = []
    for finding in findings:
        mask = grounded[finding.pk].mask
        if mask is None:
            continue
        record, _ = PacsStoreBack.objects.get_or_create(
            source=source,
            finding=finding,
            version=mask.version,
            defaults={"project": source.project},
        )
        if record.status == StoreBackStatus.STORED or record.tries >= settings.PACS_STORE_BACK_TRIES:
            continue
        due.append(record)
    return due


def store_back_sweep(*, project=None) -> list[PacsStoreBack]:
    """Send what is due on every source with store-back on (of ``project`` when given)."""
    sources = PacsSource.objects.filter(store_back=True, project__keep_identity_map=True).select_related(
        "project"
    )
    if project is not None:
        sources = sources.filter(project=project)
    sent = []
    for source in sources:
        for record in store_back_due(source=source):
            sent.append(store_back_send(record=record))
    return sent


def store_back_retry(*, record: PacsStoreBack) -> PacsStoreBack:
    """A manager's retry of a failed send (its tries start again)."""
    if record.status == StoreBackStatus.STORED:
        return record
    PacsStoreBack.objects.filter(pk=record.pk).update(tries=0)
    record.refresh_from_db()
    return store_back_send(record=record)
