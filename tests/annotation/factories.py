"""A review case for tests: a synthetic CT, a report, its rules labels and the findings made from them."""

from annotation.services import findings_from_proposals
from labeling.services import label_run_execute, label_run_get_or_create
from studies import demo
from studies.models import Report, Scan
from studies.services.scans import scans_ingest


def review_case(
    project, folder, *, shape=(8, 48, 48), spacing=(5.0, 6.0, 6.0), findings: str, impression: str = ""
) -> Scan:
    """A ReXGroundingCT project (no QA sampling) with one CT whose report states ``findings`` (and
    ``impression``); returns the scan once its findings and annotate tasks exist."""
    project.label_schema = "rexgroundingct"
    project.qa_sample_rate = 0.0
    project.save()
    volume, _ = demo.synthetic_chest_ct(shape=shape, spacing=spacing)
    demo.write_ct_series(folder / "ct", volume, spacing)
    assert not scans_ingest(project=project, paths=[folder / "ct"], workers=1).errors
    scan = Scan.objects.get(project=project)
    Report.objects.create(
        project=project,
        study=scan.study,
        external_id="r",
        source="text",
        raw_text="x",
        checksum="1",
        findings=findings,
        impression=impression,
    )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    assert findings_from_proposals(project=project) >= 1
    return scan


RADIOGRAPH_REPORT = (
    "The heart is enlarged, consistent with cardiomegaly. There is a small left pleural effusion. "
    "Degenerative changes of the thoracic spine."
)


def radiograph_case(
    project,
    folder,
    *,
    size: tuple[int, int] = (200, 160),
    findings: str = RADIOGRAPH_REPORT,
    proposal_box: tuple[int, int, int, int] | None = (60, 50, 140, 120),
    gaze: bool = True,
) -> Scan:
    """A CheXpert-labelled project (no QA sampling) with one synthetic PA radiograph (a PNG of ``size`` =
    (width X, height Y) pixels, a 2D scan), its report ``findings`` and the findings and annotate tasks of
    its rules labels. With ``proposal_box`` a gaze region proposal for Cardiomegaly (that box, and a mask
    filling it) is version 1 of that finding; with ``gaze`` the image has an eye-gaze recording."""
    import io

    import numpy as np
    from PIL import Image

    from core.storage import project_key, storage_save_bytes
    from labeling.models import RegionProposal
    from studies.models import GazeRecording

    project.label_schema = "chexpert"
    project.qa_sample_rate = 0.0
    project.save()
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    body = 40 + 150 * np.exp(
        -(((x - width / 2) / (0.35 * width)) ** 2 + ((y - height / 2) / (0.4 * height)) ** 2)
    )
    lungs = sum(
        np.exp(-(((x - cx) / (0.12 * width)) ** 2 + ((y - 0.45 * height) / (0.25 * height)) ** 2))
        for cx in (0.3 * width, 0.7 * width)
    )
    image = np.clip(body - 90 * lungs, 0, 255).astype(np.uint8)
    image[: height // 10, : width // 10] = 255  # a bright corner: top left of the image, for orientation
    (folder / "cxr").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "cxr" / "cxr1.png")
    assert not scans_ingest(project=project, paths=[folder / "cxr"], workers=1).errors
    scan = Scan.objects.get(project=project)
    Report.objects.create(
        project=project,
        study=scan.study,
        external_id="r",
        source="text",
        raw_text="x",
        checksum="1",
        findings=findings,
    )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    if proposal_box is not None:
        x0, y0, x1, y1 = proposal_box
        mask = np.zeros((height, width), np.uint8)
        mask[y0:y1, x0:x1] = 255
        out = io.BytesIO()
        Image.fromarray(mask).convert("1").save(out, format="PNG")
        key = storage_save_bytes(project_key(project, "proposals", "gaze-box.png"), out.getvalue())
        RegionProposal.objects.create(
            project=project,
            scan=scan,
            source="gaze",
            code="Cardiomegaly",
            text="The heart is enlarged.",
            box=list(proposal_box),
            mask=key,
            pixels=int((x1 - x0) * (y1 - y0)),
            score=0.6,
            label="heart",
            confidence=0.8,
        )
    if gaze:
        GazeRecording.objects.create(
            project=project,
            scan=scan,
            study=scan.study,
            external_id="P102R000001",
            reader="reader1",
            source_format="reflacx",
            image_width=width,
            image_height=height,
            fixation_count=3,
            fixations={
                "start": [0.5, 1.5, 2.5],
                "end": [1.4, 2.4, 3.4],
                "x": [0.5 * width, 0.3 * width, 0.7 * width],
                "y": [0.6 * height, 0.4 * height, 0.5 * height],
                "ang_res_x": [10.0] * 3,
                "ang_res_y": [10.0] * 3,
                "shown_rect": [[0, 0, width, height]] * 3,
            },
            checksum="2" * 64,
        )
    assert findings_from_proposals(project=project) >= 1
    return scan
