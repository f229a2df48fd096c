"""A toy grounding project: synthetic CTs (real DICOM, ingested) in which two identical nodules sit in
opposite corners of the chest, described by two report sentences that only their position tells apart.

Each patient's CT is low-density "lung" with noise and two solid cubes of the same size and density, one
towards the patient's right and the head, one towards the left and the feet (jittered per patient). The
report says ``RIGHT_UPPER`` and ``LEFT_LOWER``; an annotator grounds each sentence on its cube (a finding
with its report span, a mask), a radiologist approves. Which cube is "right upper" is read from the scan's
affine after ingest (the larger RAS+ x and z), so the sentences are true whatever the DICOM orientation.
A model can only separate them by the text *and* the position: the image patches look alike.

``toy_project`` builds the project, a frozen release (patient split by ``ratios``) and an untrained
``TextConditionedUNet`` parent registered as a grounding model (``PARENT_NETWORK``) on ``input_spec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from core.job_child import job_child_wait

RIGHT_UPPER = "There is a solid nodule in the right upper lobe."
LEFT_LOWER = "There is a solid nodule in the left lower lobe."
SHAPE_ZYX = (16, 32, 32)
SPACING_ZYX = (8.0, 8.0, 8.0)
INPUT_SPEC = {"ndim": 3, "channels": 1, "roi_size": [24, 24, 16], "window": [-1000, 400], "modality": ["CT"]}
PARENT_NETWORK = {
    "name": "TextConditionedUNet",
    "args": {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "token_dim": 32,
        "heads": 2,
        "position": True,
    },  # fmt: skip
    "text_encoder": "all-MiniLM-L6-v2",
}


@dataclass
class Toy:
    project: object
    release: object
    parent: object  # the untrained ModelVersion
    scans: list
    findings: list  # accepted Finding ids
    annotator: object = None  # a member who may list the project's models


@pytest.fixture(autouse=True)
def offline_one_thread(monkeypatch):
    """For the modules that take it (``offline_one_thread = grounding_toy.offline_one_thread``): the bundled
    MiniLM loaded offline, torch on one thread (restored after)."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_volume(rng: np.random.Generator) -> np.ndarray:
    """``(Z, Y, X)`` HU: lung (-800 ± 40 noise) with two 40 HU cubes in opposite corners."""
    volume = rng.normal(-800.0, 40.0, SHAPE_ZYX)
    side = int(rng.integers(4, 6))
    for corner in (0, 1):
        z = int(rng.integers(2, 5)) if corner == 0 else int(rng.integers(SHAPE_ZYX[0] - 5 - side + 2, 10))
        y = int(rng.integers(8, SHAPE_ZYX[1] - 8 - side))
        x = int(rng.integers(3, 9)) if corner == 0 else int(rng.integers(SHAPE_ZYX[2] - 9 - side, 25))
        volume[z : z + side, y : y + side, x : x + side] = 40.0 + rng.normal(0.0, 10.0, (side,) * 3)
    return np.clip(volume, -1024, 3000).astype(np.int16)


def _cubes(scan) -> tuple[np.ndarray, np.ndarray]:
    """The right-upper and left-lower cube masks of an ingested toy scan (canonical X, Y, Z)."""
    from ml.preannotate import scan_volume

    labels, n = ndimage.label(scan_volume(scan) > -300)
    sizes = np.bincount(labels.ravel())[1:]
    biggest = np.argsort(sizes)[::-1][:2] + 1
    assert n >= 2, f"the toy scan {scan.pk} lost a cube"
    affine = np.asarray(scan.affine, dtype=float)
    centres = []
    for label in biggest:
        centre = np.array(ndimage.center_of_mass(labels == label))
        centres.append(affine[:3, :3] @ centre + affine[:3, 3])
    a, b = (labels == biggest[0]), (labels == biggest[1])
    first_right_upper = centres[0][0] + centres[0][2] > centres[1][0] + centres[1][2]
    return (a, b) if first_right_upper else (b, a)


def toy_project(folder: Path, make_user, *, patients: int = 6, slug: str = "toy", seed: int = 0, ratios=None):
    from annotation.models import Finding, Stage
    from annotation.services import annotation_save, finding_create, task_approve, task_next, task_submit
    from core.models import Project, Role
    from core.services import membership_set
    from ml.engine.grounding import grounding_from_spec
    from ml.services import model_version_register
    from releases.services import dataset_create, release_create
    from studies import demo
    from studies.models import Report, Scan
    from studies.services.scans import scans_ingest

    project = Project.objects.create(slug=slug, name="toy grounding", label_schema="rexgroundingct")
    project.qa_sample_rate = 0.0
    project.save()
    ann, rad = make_user(f"{slug}-ann"), make_user(f"{slug}-rad")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    rng = np.random.default_rng(seed)
    scans, findings = [], []
    body = f"{RIGHT_UPPER} {LEFT_LOWER}"
    for i in range(patients):
        demo.write_ct_series(
            folder / f"p{i}", toy_volume(rng), SPACING_ZYX, patient_id=f"TOY{i}", accession=f"TA{i}"
        )
        before = set(Scan.objects.values_list("pk", flat=True))
        assert not scans_ingest(project=project, paths=[folder / f"p{i}"], workers=1).errors
        scan = Scan.objects.exclude(pk__in=before).get()
        scans.append(scan)
        Report.objects.create(
            project=project, study=scan.study, external_id=f"toy{i}", source="text", raw_text=body,
            checksum=f"toy{i}", findings=body,
        )  # fmt: skip
        right_upper, left_lower = _cubes(scan)
        for sentence, mask in ((RIGHT_UPPER, right_upper), (LEFT_LOWER, left_lower)):
            start = body.index(sentence)
            task = finding_create(
                project=project, user=ann, study=scan.study, scan=scan, text=sentence, code="2a",
                section="findings", start=start, end=start + len(sentence),
            )  # fmt: skip
            annotation_save(
                task_id=task.pk, user=ann, base_version=task.finding.current_version, kind="mask", mask=mask
            )
            task_submit(task_id=task.pk, user=ann, decision="accept")
            review = task_next(project=project, user=rad, stages=(Stage.REVIEW, Stage.QA))
            task_approve(task_id=review.pk, user=rad)
            findings.append(task.finding_id)
    assert Finding.objects.filter(pk__in=findings, status="accepted").count() == len(findings)
    dataset = dataset_create(slug=slug, name="toy grounding", projects=[project], licence="CC0")
    release = release_create(
        dataset=dataset, selection={"ratios": ratios or {"train": 0.67, "val": 0.33, "test": 0.0}}
    )
    torch.manual_seed(seed)
    weights = folder / "parent.pt"
    torch.save(grounding_from_spec(PARENT_NETWORK).state_dict(), weights)
    parent = model_version_register(
        project=project, path=weights, fmt="state-dict", name="grounder", task="grounding",
        input_spec=INPUT_SPEC, label_names=["finding"], network=PARENT_NETWORK,
    )  # fmt: skip
    parent.refresh_from_db()
    job_child_wait(parent.job_id)  # the forward-pass check, when it runs in a child process
    parent.refresh_from_db()
    assert parent.status == "ready", (parent.status, parent.error)
    return Toy(project=project, release=release, parent=parent, scans=scans, findings=findings, annotator=ann)


# -- the real CT -------------------------------------------------------------------------------

REAL_SPEC = {"ndim": 3, "channels": 1, "roi_size": [48, 48, 16], "spacing": [4.0, 4.0, 8.0],
             "window": [-1000, 400], "modality": ["CT"]}  # fmt: skip


def real_ct_grounding(
    real,
    folder: Path,
    *,
    steps: int = 40,
    seed: int = 0,
    device: str = "cpu",
    lr: float = 0.005,
    fg: float = 0.7,
) -> dict:
    """Train an untrained grounding model on the real CT of ``tests.releases.real.real_release`` (its
    accepted mass and effusion: (sentence, mask) pairs from the release, whole-volume position channels)
    and evaluate it before and after with the ReXGroundingCT metrics on the same case. There is one real
    CT: the figure shows the model learns to ground these sentences on real anatomy (fitting), not how it
    generalises to other patients."""
    from ml.engine.grounding import grounding_from_spec
    from ml.engine.inference import preprocess
    from ml.engine.orientation import to_ras, to_ras_with_affine
    from ml.engine.text import SentenceEncoder
    from ml.engine.training import grounding_case, train_grounding
    from ml.grounding_training import grounding_evaluate
    from ml.preannotate import scan_volume
    from ml.services import model_version_register
    from ml.specs import InputSpec, TrainParams
    from releases.evaluation import release_cases
    from releases.models import ReleaseCase

    split = ReleaseCase.objects.get(release=real.release, scan=real.ct).split
    cases = release_cases(real.release, split, project=real.ct.project, ndim=3)
    assert len(cases) == 1 and len(cases[0].findings) == 2, cases
    network = {**PARENT_NETWORK, "args": {**PARENT_NETWORK["args"], "channels": [8, 16, 32, 32],
                                         "strides": [2, 2, [2, 2, 1]]}}  # fmt: skip
    torch.manual_seed(seed)
    net = grounding_from_spec(network)
    weights = folder / "real-parent.pt"
    torch.save(net.state_dict(), weights)
    parent = model_version_register(
        project=real.ct.project, path=weights, fmt="state-dict", name="real-grounder", task="grounding",
        input_spec=REAL_SPEC, label_names=["finding"], network=network,
    )  # fmt: skip
    parent.refresh_from_db()
    job_child_wait(parent.job_id)  # the forward-pass check, when it runs in a child process
    parent.refresh_from_db()
    assert parent.status == "ready", (parent.status, parent.error)
    before = grounding_evaluate(parent, cases, device=device, model=net)
    case = cases[0]
    texts = [f.text for f in case.findings]
    spec = InputSpec.from_dict(REAL_SPEC)
    # the model sees the scan reordered to RAS, as the platform's training and pre-annotation give it
    volume, spacing, affine, _ = to_ras_with_affine(scan_volume(real.ct), case.affine, list(case.spacing))
    truth = [(i, to_ras(f.mask, case.affine, list(case.spacing))[0]) for i, f in enumerate(case.findings)]
    image, shape = preprocess(volume, spacing, spec)
    training = grounding_case(image, truth, affine=affine, scan_shape=shape, position=True)
    params = TrainParams(steps=steps, batch_size=2, learning_rate=lr, checkpoint_every=steps,
                         foreground_fraction=fg, seed=seed)  # fmt: skip
    text = SentenceEncoder(device).encode(texts)
    result = train_grounding(
        net, [training], text, spec.roi_size, params, save=lambda state: None, device=device
    )
    after = grounding_evaluate(parent, cases, device=device, model=net)
    from ml.grounding_training import grounding_predictor

    masks = grounding_predictor(net, parent, device=device)(case)
    sizes = {
        f.key: [int(f.mask.sum()), 0 if m is None else int(m.sum())] for f, m in zip(case.findings, masks)
    }
    return {"before": before, "after": after, "texts": texts, "split": split, "seconds": result.seconds,
            "steps": steps, "voxels_true_predicted": sizes}  # fmt: skip
