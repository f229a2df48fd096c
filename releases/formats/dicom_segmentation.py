"""The DICOM SEG of the ``dicom-seg`` export, written with highdicom: ``seg/<case_id>.dcm``, a BINARY
Segmentation of the rebuilt source series (``releases.formats.dicom_source``), one segment per mask label;
``releases.formats.dicom_seg`` writes it and lists its segments (``segment_entry``) in ``index.json``.

Segment ``n`` is the ``n``-th mask label (label order); label = the finding text (64 characters
at most; a context label's: the anatomy's name, e.g. "Left lung"), SegmentDescription = the full text
(1024 at most), TrackingID = the label id, TrackingUID derived from the case and label, display colour
``PALETTE[n - 1]`` (cycling). Category and type (with a laterality modifier, an anatomic region) say
what the segment is, from ``releases.formats.dicom_codes``: an anatomy code (context labels: the lungs
generator's left_lung / right_lung, ...) -> SCT Anatomical Structure / Lung + Left, ...; a ReXGroundingCT
category or CheXpert observation -> SCT Morphologically Abnormal Structure / its concept (Mass, Nodule,
Pleural effusion, Ground glass opacity, ...); no exact concept -> Lesion, the text saying what.
Algorithm type MANUAL for labels from a human, AUTOMATIC (with an algorithm identification from the
provenance) otherwise. Empty frames are omitted.

Reproducible: exporting a release again writes the same bytes. The SEG's UIDs (series, instance,
dimension organization) are derived from the source series and the release (name, version); its dates
and times (Series, Content, Instance Creation, highdicom's Contributing Equipment entry) are the release's
freeze time in UTC (``ReleaseMeta.frozen_at``, whole seconds; 2000-01-01 00:00:00 for a release without
one), never the clock.
"""

from __future__ import annotations

import datetime
import re
import warnings
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from releases.formats.common import mask_on_grid
from releases.formats.dicom_codes import SegmentCodes, segment_codes
from releases.formats.dicom_source import derived_uid
from releases.records import CaseRecord, LabelRecord, ReleaseMeta

SOFTWARE = "groundlab releases dicom-seg 1"
# RecommendedDisplayCIELabValue of segment n: colour n of this list (readers that find none, such as
# dcmqi in 3D Slicer, give every segment the same default colour)
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
)  # fmt: skip
NO_FREEZE = datetime.datetime(
    2000, 1, 1
)  # the SEG's dates when the release has no freeze time (never the clock)


def _algorithm_type(label: LabelRecord) -> hd.seg.SegmentAlgorithmTypeValues:
    if label.source == "human":
        return hd.seg.SegmentAlgorithmTypeValues.MANUAL
    return hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC


def _text(value: str, limit: int) -> str:
    """``value`` as a DICOM LO/ST value: no backslash or control characters, at most ``limit`` characters."""
    value = re.sub(r"[\x00-\x1f\x7f]+", " ", value.replace("\\", "/")).strip()
    return value[:limit].rstrip()


def _first(provenance: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    """The first non-empty value of ``keys`` in ``provenance``, as text ("" when none)."""
    for key in keys:
        value = (provenance or {}).get(key)
        if value not in (None, ""):
            return str(value)
    return ""


def _coded(code) -> dict[str, str]:
    return {"scheme": code.scheme_designator, "value": code.value, "meaning": code.meaning}


def _codes(label: LabelRecord) -> SegmentCodes:
    return segment_codes(code=label.code, category=label.category, text=label.text, role=label.role)


def _segment(n: int, case: CaseRecord, label: LabelRecord) -> hd.seg.SegmentDescription:
    algorithm = _algorithm_type(label)
    identification = None
    if algorithm != hd.seg.SegmentAlgorithmTypeValues.MANUAL:
        # the release's provenance: weak labels name a labeler / model, model proposals a source and version
        name = _first(label.provenance, ("model", "labeler", "source", "generator"))
        name = name or f"groundlab {label.source}"
        version = _first(label.provenance, ("model_version", "prompt_version", "version")) or "unknown"
        identification = hd.AlgorithmIdentificationSequence(
            name=_text(name, 64) or label.source,
            family=codes.DCM.ArtificialIntelligence,
            version=_text(version, 64) or "unknown",
        )
    coded = _codes(label)
    text = coded.name if label.role == "context" and coded.name else label.text
    description = hd.seg.SegmentDescription(
        segment_number=n,
        segment_label=_text(text, 64) or _text(label.label_id, 64) or f"finding {n}",
        segmented_property_category=coded.category,
        segmented_property_type=coded.type,
        algorithm_type=algorithm,
        algorithm_identification=identification,
        tracking_uid=derived_uid("tracking", case.case_id, label.label_id),
        tracking_id=_text(label.label_id, 64),
        anatomic_regions=[coded.region] if coded.region is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*PALETTE[(n - 1) % len(PALETTE)]),
    )
    if coded.modifier is not None:
        item = description.SegmentedPropertyTypeCodeSequence[0]
        item.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(coded.modifier)]
    return description


def segment_description(n: int, case_id: str, label: LabelRecord) -> hd.seg.SegmentDescription:
    """Segment ``n`` of ``label`` as this export writes it (codes, colour, algorithm, tracking from
    ``case_id``): the PACS store-back (``pacs.storeback``) describes its segments with it too."""
    return _segment(n, _CaseId(case_id), label)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _CaseId:
    case_id: str


def _stamp(meta: ReleaseMeta) -> datetime.datetime:
    """When the SEG was made, as written into it: the release's freeze (UTC, whole seconds), else a fixed
    date, never the clock, so that exporting a release again writes the same bytes."""
    if meta.frozen_at is None:
        return NO_FREEZE
    stamp = meta.frozen_at
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(datetime.UTC).replace(tzinfo=None)
    return stamp.replace(microsecond=0)


def segmentation(
    case: CaseRecord, masks: list[LabelRecord], sources: list[Dataset], meta: ReleaseMeta
) -> hd.seg.Segmentation:
    columns, rows, depth = (int(n) for n in case.image.shape)
    pixels = np.zeros((depth, rows, columns, len(masks)), dtype=bool)  # frames (Z, rows = Y, columns = X)
    for s, label in enumerate(masks):
        pixels[..., s] = mask_on_grid(case, label).transpose(2, 1, 0)
    series_uid = str(sources[0].SeriesInstanceUID)
    release = [meta.name, str(meta.version)]
    stamp = _stamp(meta)
    with warnings.catch_warnings():
        # pseudonyms are single-component person names, as the de-identification writes them
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment(n, case, label) for n, label in enumerate(masks, start=1)],
            series_instance_uid=derived_uid("seg-series", series_uid, *release),
            series_number=1000,
            sop_instance_uid=derived_uid("seg-instance", series_uid, *release),
            instance_number=1,
            manufacturer="groundlab",
            manufacturer_model_name="groundlab releases",
            software_versions=SOFTWARE,
            device_serial_number="0",
            content_label="FINDINGS",
            content_description=_text(f"{meta.name} v{meta.version}", 64),
            series_description=_text(f"Segmentation {meta.name} v{meta.version}", 64),
            content_date=stamp.date(),
            content_time=stamp.time(),
            series_date=stamp.date(),
            series_time=stamp.time(),
            omit_empty_frames=bool(pixels.any()),
        )
    _pin_clock_and_random(seg, stamp)
    for item, label in zip(seg.SegmentSequence, masks):
        item.SegmentDescription = _text(label.text, 1024)
    return seg


def _pin_clock_and_random(seg: hd.seg.Segmentation, stamp: datetime.datetime) -> None:
    """Replace what highdicom 0.28 takes from the clock or a random UID (``base.py``: instance creation
    date and time; ``base_content.ContributingEquipment.for_highdicom``: its contribution date-time;
    ``image.py``: the Dimension Organization UID) by the stamp and a UID derived from the SEG's own."""
    seg.InstanceCreationDate = stamp.strftime("%Y%m%d")
    seg.InstanceCreationTime = stamp.strftime("%H%M%S")
    for item in seg.get("ContributingEquipmentSequence", []):
        if item.get("ManufacturerModelName") == "highdicom":
            item.ContributionDateTime = stamp.strftime("%Y%m%d%H%M%S")
    dimension_uid = derived_uid("seg-dimension-organization", str(seg.SOPInstanceUID))
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = dimension_uid
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dimension_uid


def segment_entry(n: int, label: LabelRecord) -> dict[str, Any]:
    coded = _codes(label)
    return {
        "segment_number": n,
        "label_id": label.label_id,
        "text": label.text,
        "category": label.category,
        "code": label.code,
        "role": label.role,
        "source": label.source,
        "algorithm_type": _algorithm_type(label).value,
        "property_category": _coded(coded.category),
        "property_type": _coded(coded.type),
        "property_type_modifier": _coded(coded.modifier) if coded.modifier is not None else None,
        "anatomic_region": _coded(coded.region) if coded.region is not None else None,
        "coded_exactly": coded.exact,
    }
