"""A review case for tests: a synthetic CT, a report, its rules labels and the findings made from them."""

from annotation.services import findings_from_proposals
from labeling.services import label_run_execute, label_run_get_or_create
from studies import demo
from studies.models import Report, Scan
from studies.services.scans import scans_ingest


def review_case(project, folder, *, shape=(8, 48, 48), spacing=(5.0, 6.0, 6.0), findings: str) -> Scan:
    """A ReXGroundingCT project (no QA sampling) with one CT whose report states ``findings``; returns
    the scan once its findings and annotate tasks exist."""
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
    )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    assert findings_from_proposals(project=project) >= 1
    return scan
