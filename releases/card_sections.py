"""The sections of the dataset card (``releases/card.py``), each a list of Markdown lines made from the
release's rows and the ``CardStats`` gathered at freeze. Every table is sorted: the same release gives the
same text."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Exists, OuterRef

from labeling.types import CHEXPERT_OBSERVATIONS
from releases import card_meta
from releases.card_formats import FORMATS, REX_CATEGORIES, code_meaning, format_fit, rex_kind
from releases.labels import is_anatomy
from releases.models import Dataset, DatasetRelease, ReleaseCase, ReleaseLabel

SPLITS = ("train", "val", "test")
EXAMPLES = 10  # names listed per kind of change
MODALITY_TAGS = {"CT": "ct", "CR": "x-ray", "DX": "x-ray", "PT": "pet", "MR": "mri", "US": "ultrasound"}
MODALITY_WORDS = {  # words a licence note may use for the images of a modality
    "CT": ("ct", "computed tomography"),
    "CR": ("radiograph", "radiographs", "x-ray", "x-rays", "cxr", "cr"),
    "DX": ("radiograph", "radiographs", "x-ray", "x-rays", "cxr", "dx"),
    "PT": ("pet",),
    "MR": ("mr", "mri"),
}


def _table(rows: list[list[Any]], head: list[str]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return lines + [""]


def _pct(n: int, total: int) -> str:
    return f"{n / max(1, total):.0%}"


# --- YAML block ------------------------------------------------------------------------------------------


def front_matter(dataset: Dataset, release: DatasetRelease, stats=None) -> str:
    """The Hub's metadata block of the card (without ``configs``: each export adds its own). Without
    ``stats`` (a release frozen before cards had a YAML block) it is made from the release's counts."""
    counts = release.counts or {}
    kinds = set(stats.kinds) if stats is not None else set(counts.get("labels_per_kind", {}))
    sources = set(stats.sources) if stats is not None else set(counts.get("labels_per_source", {}))
    categories, task_ids = card_meta.tasks(kinds)
    meta: dict[str, Any] = {"pretty_name": dataset.name}
    meta.update(card_meta.licence_fields(dataset.slug, dataset.licence))
    meta["language"] = ["en"]  # the platform's report labelers and prompts read English reports
    meta["size_categories"] = [card_meta.size_category(int(counts.get("cases", 0)))]
    if categories:
        meta["task_categories"] = categories
    if task_ids:
        meta["task_ids"] = task_ids
    creators = []
    if "human" in sources:
        creators.append("expert-generated")
    if sources & {"weak", "model"}:
        creators.append("machine-generated")
    if creators:
        meta["annotations_creators"] = creators
    tags = ["medical", "radiology", "grounded-findings"]
    if stats is not None:
        tags += sorted({MODALITY_TAGS.get(m, m.lower()) for m in stats.modalities})
        dims = {d for mod in stats.modalities.values() for d in mod.dims}
        tags += ["3d"] if 3 in dims else []
    if counts.get("gaze_records"):
        tags.append("eye-gaze")
    meta["tags"] = list(dict.fromkeys(tags))
    return card_meta.front_matter(meta)


# --- Contents --------------------------------------------------------------------------------------------


def contents(release: DatasetRelease, stats) -> list[str]:
    counts = release.counts
    lines = ["## Contents", ""]
    lines += _table(
        [
            ["cases", *[counts["cases_per_split"].get(s, 0) for s in SPLITS], counts["cases"]],
            ["patients", *[counts["patients_per_split"].get(s, 0) for s in SPLITS], counts["patients"]],
        ],
        ["", *SPLITS, "total"],
    )
    lines += ["Images per modality (one case is one image: a CT or PET volume, or a radiograph):", ""]
    lines += _table(
        [
            [m, "/".join(f"{d}D" for d in sorted(mod.dims)), *[mod.scans.get(s, 0) for s in SPLITS],
             sum(mod.scans.values())]
            for m, mod in sorted(stats.modalities.items())
        ] or [["(none)", "", 0, 0, 0, 0]],
        ["modality", "dims", *SPLITS, "total"],
    )  # fmt: skip
    lines += [
        "Labels per modality, source and kind (`mask` on the image grid, `box`, `none` = report-level):",
        "",
    ]
    rows = []
    for m, mod in sorted(stats.modalities.items()):
        for source in sorted({s for s, _ in mod.labels}):
            rows.append([m, source, *[mod.labels.get((source, k), 0) for k in ("mask", "box", "none")]])
    lines += _table(rows or [["(none)", "", 0, 0, 0]], ["modality", "source", "mask", "box", "none"])
    lines += [
        "Splits are by patient (no patient in two splits), seeded "
        f"(seed {release.selection.get('seed', 0)}, ratios {release.selection.get('ratios')}), stratified by "
        "finding category, and stable: a patient keeps its split in later versions.",
        "",
        "Positive labels per category and split:",
        "",
    ]
    lines += _table(
        [[k, *[v.get(s, 0) for s in SPLITS]] for k, v in counts["categories"].items()]
        or [["(none)", 0, 0, 0]],
        ["category", *SPLITS],
    )
    return lines


# --- Legend ----------------------------------------------------------------------------------------------


def legend(release: DatasetRelease, stats) -> list[str]:
    lines = ["## Legend of classes and codes", ""]
    roles: dict[str, set[str]] = {}
    masks: dict[str, int] = {}
    for (name, role), n in stats.classes.items():
        roles.setdefault(name, set()).add(role)
        masks[name] = masks.get(name, 0) + n
    table = sorted(((int(k), v) for k, v in (release.classes or {}).items()))
    if table:
        lines += [
            "Class table: the integer value of each mask class in label images (MONAI `labelsTr`, the class "
            "maps of other exports); 0 is background. It was fixed at the dataset's first release and is "
            "only "
            "extended: a class keeps its value in every later version, also when it has no mask in this one.",
            "",
        ]
        rows = []
        for value, name in table:
            role = "context" if roles.get(name) == {"context"} or is_anatomy(name) else "finding"
            found = "/".join(sorted(roles.get(name, set()))) or "(none in this version)"
            rows.append(
                [value, f"`{name}`", code_meaning(name, role) or "platform code", found, masks.get(name, 0)]
            )
        lines += _table(rows, ["value", "class", "meaning", "role", "mask labels"])
    codes = {code for code, _ in stats.codes}
    present = {c: n for (c, a), n in stats.codes.items() if a == "present"}
    if codes & set(REX_CATEGORIES) or any(mod.dims.get(3) for mod in stats.modalities.values()):
        lines += [
            "ReXGroundingCT categories (chest CT lung and pleura findings; `1x` typically non-focal, scored "
            "as "
            "one unit; `2x` typically focal, scored per lesion):",
            "",
        ]
        cats = release.counts.get("categories", {})
        rows = [
            [c, name, rex_kind(c), *[cats.get(c, {}).get(s, 0) for s in SPLITS]]
            for c, name in REX_CATEGORIES.items()
        ]
        lines += _table(rows, ["code", "finding", "kind", *[f"positive {s}" for s in SPLITS]])
    chexpert = [obs for obs in CHEXPERT_OBSERVATIONS if obs in codes]
    if chexpert:
        lines += [
            "CheXpert observations (chest radiograph report labels; in the `chexpert` export's CSVs `1.0` = "
            "present, `0.0` = absent, `-1.0` = uncertain, empty = not mentioned; `No Finding` is derived):",
            "",
        ]
        assertions = ("present", "absent", "uncertain")
        rows = [[obs, *[stats.codes.get((obs, a), 0) for a in assertions]] for obs in chexpert]
        lines += _table(rows, ["observation", *assertions])
    other = sorted(codes - set(REX_CATEGORIES) - set(CHEXPERT_OBSERVATIONS))
    if other:
        lines += ["Other codes:", ""]
        rows = []
        for c in other:
            role = "context" if roles.get(c) == {"context"} or is_anatomy(c) else "finding"
            meaning = code_meaning(c, role) or "a report finding outside the schema's codes"
            labels = sum(n for (k, _), n in stats.codes.items() if k == c)
            rows.append([f"`{c}`" if c else "(none)", meaning, labels, present.get(c, 0)])
        lines += _table(rows, ["code", "meaning", "labels", "present"])
    lines += [
        "Label fields (manifest.json and the exports): `source` `human` = drawn or accepted by an annotator "
        "and approved by a radiologist, `weak` = a report labeler's proposal, `model` = a model's or "
        "generator's proposal (weak and model labels are not reviewed); `assertion` present / absent / "
        "uncertain (a finding the reviewers rejected is absent); `kind` mask / box / none; `role` `finding` "
        "or "
        f"`context` (anatomy masks, {stats.context} in this version, kept apart from the findings). "
        "A finding's box and mask are separate annotations: a finding grounded by both is kind `mask` "
        f"(its newest mask) with its newest drawn `box` beside it ({stats.boxed_masks} in this version); "
        "box formats take that box, mask formats the mask.",
        "",
    ]
    return lines


# --- Images ----------------------------------------------------------------------------------------------


def images(stats) -> list[str]:
    lines = ["## Images", ""]
    rows = []
    for m, mod in sorted(stats.modalities.items()):
        size = f"{mod.columns.text()} × {mod.rows.text()}" + (
            f" × {mod.slices.text()}" if mod.slices.low else ""
        )
        rows.append([
            m, sum(mod.scans.values()), ", ".join(f"{k} {v}" for k, v in sorted(mod.sources.items())), size,
            mod.pixel_spacing.text(" mm") + (f" ({mod.unmeasured} unknown)" if mod.unmeasured else ""),
            mod.slice_spacing.text(" mm"), mod.thickness.text(" mm"),
        ])  # fmt: skip
    lines += _table(
        rows or [["(none)", 0, "", "", "", "", ""]],
        ["modality", "images", "source files", "size (columns × rows × slices)", "pixel spacing",
         "slice spacing", "slice thickness"],
    )  # fmt: skip
    lines += [
        "Pixel spacing is the in-plane voxel size of the stored image; images read from PNG or JPEG files "
        "carry "
        "none (1.0 mm is assumed and they are counted as unknown). Slice thickness comes from the "
        "de-identified "
        "DICOM header (SliceThickness).",
        "",
        "Scanners (Manufacturer and ManufacturerModelName of the de-identified headers):",
        "",
    ]
    for m, mod in sorted(stats.modalities.items()):
        listed = ", ".join(
            f"{k}: {v}" for k, v in sorted(mod.scanners.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        lines.append(f"- {m}: {listed or 'n/a'}")
    return lines + [""]


# --- How the labels were made ----------------------------------------------------------------------------


def labels_made(release: DatasetRelease, stats) -> list[str]:
    counts, metrics = release.counts, release.metrics
    total = max(1, counts["labels"])
    src = counts["labels_per_source"]
    labelers, models, readers = stats.labelers, stats.models, stats.readers
    lines = [
        "## How the labels were made",
        "",
        f"Selection: finding statuses {', '.join(release.selection.get('statuses', []))}; sources "
        f"{', '.join(release.selection.get('sources', []))}"
        + (f"; modalities {', '.join(chosen)}" if (chosen := release.selection.get("modalities")) else "")
        + f"; anatomy masks as {release.selection.get('anatomy', 'context')}.",
        "",
        f"- human-reviewed: {src.get('human', 0)} ({src.get('human', 0) / total:.0%}) — grounded by "
        "annotators and approved by radiologists in the platform's review"
        + (f" (annotators: {', '.join(f'{k} {v}' for k, v in sorted(readers.items()))})" if readers else ""),
        f"- weak (report labelers, not reviewed): {src.get('weak', 0)} ({src.get('weak', 0) / total:.0%})",
        f"- model proposals (not reviewed): {src.get('model', 0)} ({src.get('model', 0) / total:.0%})",
    ]  # fmt: skip
    if labelers:
        lines.append("- labelers: " + ", ".join(f"{k}: {v}" for k, v in sorted(labelers.items())))
    if models:
        lines.append("- models and generators: " + ", ".join(f"{k}: {v}" for k, v in sorted(models.items())))
    lines += ["", "### Agreement between readers", ""]
    if stats.multi:
        lines.append(
            f"{stats.multi} labels were read independently by {', '.join(sorted(stats.reader_counts))}"
            f" readers, then merged ({', '.join(sorted(stats.methods))} consensus) and "
            f"confirmed by a radiologist: mean pairwise Dice {stats.mean('mean_dice')}, IoU "
            f"{stats.mean('mean_iou')}, share of reader pairs agreeing on the finding "
            f"{stats.mean('decision_agreement')}."
        )
    else:
        lines.append("Each human-reviewed label was grounded by one annotator and approved by a radiologist.")
    lines += ["", "### Proposals against the accepted labels (ReXGroundingCT metrics)", ""]
    if metrics.get("compared"):

        def row(name: str, m: dict) -> list[Any]:
            inst, dist = m.get("instance", {}), m.get("distance", {})
            return [
                name, m.get("findings", 0), f"{m.get('dice_mean') or 0:.3f}", f"{m.get('hit_rate') or 0:.3f}",
                f"{inst.get('precision', 0):.3f} / {inst.get('recall', 0):.3f} / {inst.get('f1', 0):.3f}",
                f"{dist.get('precision', 0):.3f} / {dist.get('recall', 0):.3f} / {dist.get('f1', 0):.3f}",
            ]  # fmt: skip

        rows = [row("all", metrics)] + [row(k, v) for k, v in sorted(metrics.get("by_category", {}).items())]
        lines += [
            f"Over {metrics['compared']} accepted masks that started from a model or generator proposal "
            "(Dice per finding; hit rate = share with Dice ≥ 0.1; instances match one-to-one at Dice ≥ 0.2; "
            "distance matches within 2 × the largest voxel spacing, by centroid for focal findings and ASSD "
            "for non-focal ones):",
            "",
        ]
        lines += _table(
            rows,
            ["category", "findings", "mean Dice", "hit rate", "instance P / R / F1", "distance P / R / F1"],
        )
    else:
        lines += ["No accepted mask in this release started from a model or generator proposal.", ""]
    return lines


# --- Files and loading -----------------------------------------------------------------------------------


def files(stats, release: DatasetRelease) -> list[str]:
    dims = {d for mod in stats.modalities.values() for d in mod.dims}
    kinds = set(stats.kinds)
    lines = [
        "## Files and loading",
        "",
        "Every export holds, beside its format's files: `README.md` (this card, with the format's `configs` "
        "for "
        "the Hugging Face `datasets` library in its YAML block), `manifest.json` (every case, file sha256 "
        "and "
        "label with its provenance, as frozen), `croissant.json` (a Croissant 1.0 description of the "
        "export's "
        'files and index records: `mlcroissant.Dataset(jsonld="croissant.json")`) and `SHA256SUMS` '
        "(`sha256sum -c SHA256SUMS` checks a download). Images and masks of a case share one grid and one "
        "affine (voxel → RAS+ mm) in every format; 3D arrays are (X = column, Y = row, Z = slice).",
        "",
    ]
    for doc in FORMATS:
        why = format_fit(doc, dims, kinds)
        lines += [f"### `{doc.name}`: {doc.title}", ""]
        if why:
            lines += [f"This release cannot be exported as `{doc.name}` as it is: the format {why} (freeze a "
                      "selection by modality, or without those labels, to use it).", ""]  # fmt: skip
        lines += [doc.layout, "", "```python", doc.snippet.rstrip("\n"), "```", ""]
    return lines


# --- De-identification -----------------------------------------------------------------------------------


def deidentification(stats) -> list[str]:
    flagged = {
        m: (mod.burned_in.get("YES", 0), mod.burned_in.get("UNKNOWN", 0))
        for m, mod in stats.modalities.items()
    }
    listed = "; ".join(f"{m}: {yes} YES, {unknown} UNKNOWN" for m, (yes, unknown) in sorted(flagged.items()))
    return [
        "## De-identification",
        "",
        "Applied at ingest, before anything was stored (`studies/deid/`):",
        "",
        "- DICOM headers follow DICOM PS3.15 Annex E, the Basic Application Level Confidentiality Profile "
        "(Table E.1-1; code 113100) with the options Retain Longitudinal Temporal Information with Modified "
        "Dates (113107), Retain Patient Characteristics (113108: sex, age, weight and size kept) and Retain "
        "Safe Private (113111: only the Philips PET SUV scale factors); each header says so in "
        "DeidentificationMethod, DeidentificationMethodCodeSequence and PatientIdentityRemoved = YES.",
        "- Names and identifiers: PatientName and PatientID are replaced by the patient's pseudonym (`P` + "
        "12 hex digits of a keyed HMAC-SHA256 of the original ID under the project's secret); every other "
        "person name is emptied; identifying attributes (addresses, institution, physicians, accession and "
        "study IDs, device serial numbers, free-text comments) are removed, emptied or replaced by dummy "
        "values as the profile's table says.",
        "- Dates: every date (DA) and the date part of every date-time (DT) is moved earlier by one offset "
        "per patient, the same for all of a patient's studies in a project (between 1 and 1,095 days), so "
        "the intervals between a patient's studies are kept; times of day are kept; the birth date is "
        "emptied and the birth time removed. The offset is secret: it is in no export, manifest or card.",
        "- UIDs: every UID that is not a standard DICOM UID is replaced by `2.25.<integer>` derived from it "
        "by a keyed hash, the same original giving the same new UID across a project, so references "
        "between series, instances and segmentations stay consistent.",
        "- Ages of 90 years or more become `090Y`; private elements are removed (but the SUV factors "
        "above), as are overlays (60xx), curves (50xx) and codes of private or local coding schemes.",
        "- Report text is scrubbed of the names, identifiers and dates found in the study's DICOM headers "
        "(replaced by `XXXX`, as public report collections do).",
        "- Pixels are not altered. Burned-in annotation: an image is flagged when its BurnedInAnnotation "
        "is YES, or UNKNOWN when the file cannot say (secondary captures, PNG and JPEG files); flagged "
        f"images are not left out of releases. In this version: {listed or 'no images'}. Check flagged "
        "images for burned-in text before publishing pixels.",
        "",
    ]


# --- Intended use and limitations ------------------------------------------------------------------------


def intended_use(release: DatasetRelease, stats) -> list[str]:
    src = release.counts.get("labels_per_source", {})
    total = max(1, release.counts.get("labels", 0))
    unreviewed = src.get("weak", 0) + src.get("model", 0)
    unknown = sum(mod.unmeasured for mod in stats.modalities.values())
    lines = [
        "## Intended use and limitations",
        "",
        "For research on grounding radiology findings in images (segmentation, detection, grounded report "
        "generation and evaluation) and on report labels; not for clinical decisions.",
        "",
        f"- {unreviewed} labels ({_pct(unreviewed, total)}) are weak or model labels that no expert "
        "reviewed: "
        "filter on `source` = `human` for reviewed labels only.",
        "- The class table's values are fixed across versions; a class may have no mask in a version (it "
        "stays in the table). Context labels (anatomy masks) are not findings.",
        "- Splits are by patient and stable across versions: train and evaluate on the given splits, or "
        "patients' images leak between them.",
        "- An absent label says the report (or the reviewers) ruled out that finding, not that the image "
        "holds no other finding; findings a report does not mention are not labelled.",
    ]
    if unknown:
        lines.append(f"- {unknown} images come from PNG or JPEG files without pixel spacing: distances in mm "
                     "are not meaningful for them.")  # fmt: skip
    lines += [
        "- The scanners and sites are few (see Images): results may not carry over to other equipment.",
        "",
    ]
    return lines


# --- Changes ---------------------------------------------------------------------------------------------


def changes(release: DatasetRelease, previous: DatasetRelease | None) -> list[str]:
    """What changed from ``previous``, counted in the database (no case or label list is held)."""
    if previous is None:
        return ["## Changes", "", "The first version of this dataset.", ""]
    new_cases = ReleaseCase.objects.filter(release=release)
    old_cases = ReleaseCase.objects.filter(release=previous)
    new_labels = ReleaseLabel.objects.filter(release=release)
    old_labels = ReleaseLabel.objects.filter(release=previous)

    def same(rows, outer="case__case_id"):
        return rows.filter(case__case_id=OuterRef(outer), label_id=OuterRef("label_id"))

    found = {
        "cases added": (new_cases.exclude(case_id__in=old_cases.values("case_id")), "case_id"),
        "cases removed": (old_cases.exclude(case_id__in=new_cases.values("case_id")), "case_id"),
        "cases moved to another split": (
            new_cases.filter(Exists(old_cases.filter(case_id=OuterRef("case_id")).exclude(split=OuterRef("split")))),
            "case_id",
        ),
        "labels added": (new_labels.filter(~Exists(same(old_labels))), "label"),
        "labels removed": (old_labels.filter(~Exists(same(new_labels))), "label"),
        "labels changed": (new_labels.filter(Exists(same(old_labels).exclude(digest=OuterRef("digest")))),
                           "label"),
    }  # fmt: skip
    lines = ["## Changes", "", f"From version {previous.version} to {release.version}:", ""]
    for what, (rows, key) in found.items():
        n = rows.count()
        if key == "case_id":
            names = list(rows.order_by("case_id").values_list("case_id", flat=True)[:EXAMPLES])
        else:
            names = [f"{c}/{lab}" for c, lab in rows.order_by("case__case_id", "label_id").values_list(
                "case__case_id", "label_id")[:EXAMPLES]]  # fmt: skip
        shown = f": {', '.join(names)}" + (", ..." if n > len(names) else "") if n else ""
        lines.append(f"- {what}: {n}{shown}")
    old_classes, new_classes = previous.classes or {}, release.classes or {}
    added = sorted(((int(k), v) for k, v in new_classes.items() if k not in old_classes))
    lines.append(
        "- classes added: "
        + (", ".join(f"{k} `{v}`" for k, v in added) if added else "none")
        + " (values of earlier classes are unchanged)"
    )
    return lines + ["", "A label is changed when its text, code, category, assertion, kind, geometry or mask "
                    "differs; `manifest.json` of both versions holds the details.", ""]  # fmt: skip


# --- Licence ---------------------------------------------------------------------------------------------


def _names(part: str, project, modalities: set[str]) -> bool:
    """Whether a licence part's note (its parenthesis, else its text) names the project or its images."""
    note = " ".join(re.findall(r"\(([^)]*)\)", part)) or part
    low = note.lower()
    words = {project.slug.lower(), project.name.lower()}
    for m in modalities:
        words.update(MODALITY_WORDS.get(m, (m.lower(),)))
    return any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", low) for w in words if w)


def licence(dataset: Dataset, projects: list, stats) -> list[str]:
    parts = card_meta.licence_parts(dataset.licence)
    lines = ["## Licence", ""]
    if not parts:
        return lines + ["Not stated: ask the dataset's maintainers before use.", ""]
    lines += [f"The dataset's licence statement: {dataset.licence}", ""]
    lines += _table(
        [[part, f"`{ident}`" if ident else "not a licence the Hugging Face Hub lists (`other`)",
          card_meta.licence_url(ident) or "" if ident else ""] for part, ident in parts],
        ["part", "identifier", "text"],
    )  # fmt: skip
    rows = []
    for project in projects:
        modalities = {m for (pid, m) in stats.projects if pid == project.pk}
        scans = sum(n for (pid, _), n in stats.projects.items() if pid == project.pk)
        named = [part for part, _ in parts if _names(part, project, modalities)]
        rows.append([
            project.slug, project.get_label_schema_display(), ", ".join(sorted(modalities)) or "-", scans,
            "; ".join(named) or (parts[0][0] if len(parts) == 1 else "the statement above as a whole"),
        ])  # fmt: skip
    lines += [
        "Per project (the platform records one statement per dataset; a part is matched to a project when "
        "its "
        'note names the project or its images\' modality, e.g. "(CT, ...)" or "(radiographs, ...)"):',
        "",
    ]
    return lines + _table(rows, ["project", "label schema", "modalities", "images", "licence"])
