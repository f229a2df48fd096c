"""Every route of the URLconf × every role: the visibility rule of each is asserted, and a route (or an HTTP
method of one) without a rule here fails the test, so a new endpoint cannot ship without one.

The world: project ``alpha`` (a reviewed CT: an accepted finding with its mask, a rejected one, an open one
with an annotator's draft, and one with its readers whose reading holds a blinded version; a job, a label
run, a model, a training run, a dataset with a frozen release and an export) and project ``gamma`` (gaze
recordings with a finished gaze label run: heatmaps, sentences, anatomy records, region proposals). The
same four people hold one role each in both: manager, annotator, radiologist, researcher; ``outsider`` is
a manager of project ``beta`` only; ``anonymous`` is logged out.

Allowed means: neither 401, 403, 404 nor 405, and no 500 (an empty body may well be a 400). Denied means
403 (a member whose role does not allow it) or 404 (anything the caller may not see does not exist); an
anonymous caller gets 401 or 403. List routes answer every logged-in caller; for them the rule is which
rows each role sees.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from django.db import transaction
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

ROLES = ("manager", "annotator", "radiologist", "researcher")
EVERYONE = ("manager", "annotator", "radiologist", "researcher", "outsider", "anonymous")
MEMBERS = frozenset(ROLES)
REVIEWERS = frozenset({"manager", "annotator", "radiologist"})
ANNOTATORS = frozenset({"manager", "annotator"})
WRITERS = frozenset({"manager", "researcher"})
READERS = frozenset({"manager", "researcher", "radiologist"})
MANAGERS = frozenset({"manager"})
LOGGED_IN = frozenset({*ROLES, "outsider"})
ANYONE = frozenset(EVERYONE)


@dataclass
class Case:
    """One request of a route: ``args`` from the world, the roles ``allowed``; for a list, ``rows``: a
    world key → the roles that must see that row (everyone else must not)."""

    method: str
    allowed: frozenset
    args: Callable[[dict], list] = lambda w: []
    query: Callable[[dict], dict] = lambda w: {}
    body: dict | None = None
    rows: dict[str, frozenset] = field(default_factory=dict)
    note: str = ""
    token: bool = False  # authenticate with an API token instead of a browser session


def get(allowed, args=lambda w: [], **kw) -> Case:
    return Case("get", allowed, args, **kw)


def post(allowed, args=lambda w: [], **kw) -> Case:
    return Case("post", allowed, args, **kw)


def pk(key: str) -> Callable[[dict], list]:
    return lambda w: [w[key].pk]


ALPHA = lambda w: ["alpha"]  # noqa: E731
GAMMA = lambda w: ["gamma"]  # noqa: E731

# route name -> its cases (every method the view implements needs one).
RULES: dict[str, list[Case]] = {
    # core
    "project-list": [get(LOGGED_IN, rows={"alpha": MEMBERS})],
    "project-detail": [get(MEMBERS, ALPHA), Case("patch", MANAGERS, ALPHA, body={"qa_sample_rate": 0.2})],
    "job-list": [get(MEMBERS, ALPHA)],
    "job-detail": [get(MEMBERS, pk("job"))],
    # studies
    "upload-create": [post(WRITERS, ALPHA)],
    "identity-map": [get(MANAGERS, ALPHA)],
    "patient-list": [get(LOGGED_IN, rows={"patient": MEMBERS})],
    "patient-detail": [get(MEMBERS, pk("patient"))],
    "study-list": [get(LOGGED_IN, rows={"study": MEMBERS})],
    "study-detail": [get(MEMBERS, pk("study"))],
    "scan-list": [get(LOGGED_IN, rows={"scan": MEMBERS})],
    "scan-detail": [get(MEMBERS, pk("scan"))],
    "scan-nifti": [get(MEMBERS, pk("scan"))],
    "scan-png": [get(MEMBERS, pk("scan"))],
    "scan-thumbnail": [get(MEMBERS, pk("scan"))],
    "report-list": [get(LOGGED_IN, rows={"report": MEMBERS})],
    "report-detail": [get(MEMBERS, pk("report"))],
    "gaze-list": [get(LOGGED_IN, rows={"recording": MEMBERS})],
    "gaze-detail": [get(MEMBERS, pk("recording"))],
    # labeling
    "label-runs": [get(MEMBERS, ALPHA), post(WRITERS, ALPHA, body={"labeler": "rules"})],
    "label-run-detail": [get(MEMBERS, pk("label_run"))],
    "proposal-list": [get(LOGGED_IN, rows={"finding_proposal": MEMBERS})],
    "gaze-label-runs": [get(MEMBERS, GAMMA), post(WRITERS, GAMMA)],
    "gaze-label-run-detail": [get(MEMBERS, pk("gaze_run"))],
    "gaze-label-run-results": [get(MEMBERS, pk("gaze_run"))],
    "gaze-labels-one": [post(WRITERS, pk("recording"))],
    "gaze-recording-heatmap": [get(MEMBERS, pk("recording"))],
    "anatomy-mask-upload": [post(frozenset({*WRITERS, "annotator"}), pk("recording"))],
    "gaze-heatmap-list": [get(LOGGED_IN, rows={"heatmap": MEMBERS})],
    "gaze-heatmap-array": [get(MEMBERS, pk("heatmap"))],
    "gaze-heatmap-png": [get(MEMBERS, pk("heatmap"))],
    "gaze-sentence-list": [get(LOGGED_IN, rows={"sentence": MEMBERS})],
    "anatomy-record-list": [get(LOGGED_IN, rows={"anatomy_record": MEMBERS})],
    "anatomy-focus-png": [get(MEMBERS, pk("anatomy_record"))],
    "region-proposal-list": [get(LOGGED_IN, rows={"region_proposal": MEMBERS})],
    "region-proposal-mask-file": [get(MEMBERS, pk("region_proposal"))],
    "region-proposal-mask": [get(MEMBERS, pk("region_proposal"))],
    # ml
    "project-models": [get(MEMBERS, ALPHA), post(MANAGERS, ALPHA)],
    "model-version-detail": [get(MEMBERS, pk("model"))],
    "scan-preannotate": [post(frozenset({*WRITERS, "annotator"}), pk("scan"))],
    "project-training-runs": [post(WRITERS, ALPHA)],
    "training-run-detail": [get(MEMBERS, pk("training_run"))],
    "active-learning": [get(MEMBERS, ALPHA), post(WRITERS, ALPHA)],
    # annotation: review work is the reviewers'; researchers see accepted findings only; readings blinded
    "findings-from-proposals": [post(MANAGERS, ALPHA)],
    "finding-create": [post(ANNOTATORS, ALPHA)],
    "next-task": [
        get(ANNOTATORS, ALPHA, query=lambda w: {"stage": "annotate"}),
        get(frozenset({"radiologist"}), ALPHA, query=lambda w: {"stage": "review"}, note="review"),
    ],
    "task-detail": [
        get(REVIEWERS, pk("task_accepted"), note="accepted finding"),
        get(REVIEWERS, pk("task_open"), note="open finding"),
    ],
    "task-claim": [post(REVIEWERS - {"radiologist"}, pk("task_open"))],
    "task-annotations": [post(ANNOTATORS, pk("task_open"))],
    "task-submit": [post(ANNOTATORS, pk("task_open"))],
    "task-approve": [post(frozenset({"radiologist"}), pk("task_open"))],
    "task-return": [post(frozenset({"radiologist"}), pk("task_open"))],
    "task-assign": [post(MANAGERS, pk("task_open"))],
    "next-reading": [get(ANNOTATORS, ALPHA)],
    "reading-detail": [get(frozenset({"annotator"}), pk("reading"), note="blinded: the reader only")],
    "reading-annotations": [post(frozenset({"annotator"}), pk("reading"))],
    "reading-submit": [post(frozenset({"annotator"}), pk("reading"))],
    "project-agreement": [get(READERS, ALPHA)],
    "finding-list": [
        get(
            LOGGED_IN,
            rows={"finding_accepted": MEMBERS, "finding_open": REVIEWERS, "finding_rejected": REVIEWERS},
        )
    ],
    "history-list": [
        get(
            LOGGED_IN,
            rows={
                "event_accepted": MEMBERS,
                "event_open": REVIEWERS,
                "event_blinded": frozenset({"annotator"}),
            },
        )
    ],
    "annotation-mask": [
        get(MEMBERS, pk("annotation_accepted"), note="accepted finding, current version"),
        get(REVIEWERS, pk("annotation_open"), note="open finding (a draft)"),
        get(frozenset({"annotator"}), pk("annotation_blinded"), note="a reader's version: blinded"),
    ],
    "finding-interactive": [
        get(ANNOTATORS, pk("finding_open"), note="what a click does"),
        post(ANNOTATORS, pk("finding_open"), body={"points": [[1, 1, 1]]}, note="a click"),
    ],
    "finding-interactive-answer": [
        get(
            frozenset({"annotator"}),
            lambda w: [w["finding_open"].pk, w["interactive_job"].pk],
            note="a click's answer: the clicker's alone",
        )
    ],
    "queue-priorities": [post(MANAGERS, ALPHA)],
    "train-from-accepted": [post(WRITERS, ALPHA)],
    # releases: datasets are read by managers, researchers and radiologists of every project they draw from
    "dataset-list": [get(LOGGED_IN, rows={"dataset": READERS}), post(LOGGED_IN)],
    "dataset-detail": [get(READERS, lambda w: [w["dataset"].slug])],
    "dataset-releases": [
        get(READERS, lambda w: [w["dataset"].slug]),
        post(WRITERS, lambda w: [w["dataset"].slug]),
    ],
    "release-detail": [get(READERS, pk("release"))],
    "release-manifest": [get(READERS, pk("release"))],
    "release-card": [get(READERS, pk("release"))],
    "release-diff": [get(READERS, pk("release"))],
    "release-exports": [
        get(READERS, pk("release")),
        post(READERS, pk("release"), body={"format": "chexpert"}),
    ],
    "export-detail": [get(READERS, pk("export"))],
    "export-archive": [get(READERS, pk("export"))],
    "export-file": [get(READERS, lambda w: [w["export"].pk, "SHA256SUMS"])],
    # pacs: managers only (a source's URL and the hospital's studies are not the dataset's)
    "pacs-sources": [get(MANAGERS, ALPHA), post(MANAGERS, ALPHA, note="an empty source: 400")],
    "pacs-source": [
        get(MANAGERS, lambda w: ["alpha", w["pacs_source"].pk]),
        Case("patch", MANAGERS, lambda w: ["alpha", w["pacs_source"].pk], body={"store_back": False}),
        Case("delete", MANAGERS, lambda w: ["alpha", w["pacs_source_spare"].pk]),
    ],
    "pacs-source-check": [
        post(MANAGERS, lambda w: ["alpha", w["pacs_source"].pk], note="down: 200, check_ok false")
    ],
    "pacs-studies": [
        get(
            MANAGERS,
            lambda w: ["alpha", w["pacs_source"].pk],
            query=lambda w: {"study_date": "2007-04"},
            note="a bad date: 400 before the PACS is asked",
        )
    ],
    "pacs-imports": [get(MANAGERS, ALPHA), post(MANAGERS, ALPHA, note="no studies: 400")],
    "pacs-import": [get(MANAGERS, lambda w: ["alpha", w["pacs_import"].pk])],
    "pacs-store-backs": [get(MANAGERS, ALPHA), post(MANAGERS, ALPHA)],
    "pacs-page": [get(MANAGERS, ALPHA, note="the PACS page")],
    # console: the manager's pages (tests/console/); everyone else gets 404, anonymous callers the login
    "console-projects": [get(LOGGED_IN)],
    "console-project": [get(MANAGERS, ALPHA)],
    "console-members": [get(MANAGERS, ALPHA), post(MANAGERS, ALPHA)],
    "console-member-remove": [post(MANAGERS, lambda w: ["alpha", w["user_annotator"].pk])],
    "console-uploads": [get(MANAGERS, ALPHA), post(MANAGERS, ALPHA)],
    "console-jobs": [get(MANAGERS, ALPHA)],
    "console-job": [get(MANAGERS, lambda w: ["alpha", w["job"].pk])],
    "console-labels": [get(MANAGERS, ALPHA)],
    "console-label-run-start": [post(MANAGERS, ALPHA)],
    "console-gaze-run-start": [post(MANAGERS, GAMMA)],
    "console-preannotate": [get(MANAGERS, ALPHA), post(MANAGERS, ALPHA)],
    "console-tasks": [get(MANAGERS, ALPHA), post(MANAGERS, ALPHA)],
    "console-queue": [get(MANAGERS, ALPHA)],
    "console-task-assign": [post(MANAGERS, lambda w: ["alpha", w["task_open"].pk])],
    "console-releases": [get(MANAGERS, ALPHA)],
    "console-dataset-create": [post(MANAGERS, ALPHA)],
    "console-release-create": [post(MANAGERS, lambda w: ["alpha", w["dataset"].slug])],
    "console-export-create": [post(MANAGERS, lambda w: ["alpha", w["release"].pk])],
    # pages, schema, authentication
    "review-login": [get(ANYONE), post(ANYONE), Case("put", ANYONE)],
    "review": [
        get(REVIEWERS, ALPHA, note="the review screen"),
        # a link to one case (README "Links to a case"): the page is the reviewers', whatever the id
        get(REVIEWERS, ALPHA, query=lambda w: {"task": w["task_accepted"].pk}, note="a task's link"),
        get(REVIEWERS, ALPHA, query=lambda w: {"finding": "x"}, note="a bad link"),
    ],
    "home": [get(ANYONE)],
    "schema": [get(ANYONE)],
    "swagger-ui": [get(ANYONE)],
    "redoc": [get(ANYONE)],
    "auth-token-revoke": [post(LOGGED_IN, token=True)],
    "auth-token-revoke-all": [post(LOGGED_IN, token=True), post(LOGGED_IN, note="from a browser session")],
    "auth-token": [post(ANYONE)],
    "rest_framework:login": [get(ANYONE), post(ANYONE), Case("put", ANYONE)],
    "rest_framework:logout": [post(ANYONE)],
}
# Routes whose rule is another machinery's: Django's admin (staff only, tested in tests/core/test_admin.py).
OWN_RULES = ("admin:",)


def _routes() -> dict[str, tuple[str, object]]:
    """Every named route of the URLconf: name → (pattern, view callback)."""
    found: dict[str, tuple[str, object]] = {}

    def walk(patterns, prefix: str, namespace: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
                walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern) and p.name:
                found.setdefault(namespace + p.name, (prefix + str(p.pattern), p.callback))

    walk(get_resolver().url_patterns, "", "")
    return found


def _methods(callback) -> set[str]:
    """The HTTP methods a view implements (beyond HEAD and OPTIONS)."""
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is None:  # a function view: GET (and POST when it says so)
        allowed = getattr(callback, "allowed_methods", None) or ["get"]
        return {m.lower() for m in allowed} - {"head", "options"}
    names = set(getattr(callback, "actions", {}) or {}) or {
        m for m in cls.http_method_names if hasattr(cls, m) and m not in ("head", "options")
    }
    return names


def test_every_route_and_method_has_a_rule():
    routes = {n: r for n, r in _routes().items() if not n.startswith(OWN_RULES)}
    missing = sorted(set(routes) - set(RULES))
    assert not missing, f"routes without an access rule in tests/test_access_matrix.py: {missing}"
    stale = sorted(set(RULES) - set(routes))
    assert not stale, f"rules for routes that no longer exist: {stale}"
    for name, (pattern, callback) in routes.items():
        ruled = {case.method for case in RULES[name]}
        unruled = _methods(callback) - ruled
        assert not unruled, f"{name} ({pattern}): methods {sorted(unruled)} have no access rule"


# --- the world --------------------------------------------------------------------------------------------


def _world(folder: Path) -> dict:
    from django.contrib.auth import get_user_model

    from annotation import readers
    from annotation.models import Annotation, Finding, HistoryEvent, ReviewTask, Stage
    from annotation.services import annotation_save, finding_create, task_claim
    from core.jobs import job_create
    from core.models import Role
    from core.services import membership_set, project_create
    from labeling.gaze.service import gaze_run_execute, gaze_run_get_or_create
    from labeling.models import (
        FindingProposal,
        GazeAnatomyRecord,
        GazeHeatmap,
        GazeSentence,
        LabelRun,
        RegionProposal,
    )
    from ml.models import ModelVersion, TrainingRun
    from releases.services import dataset_create, export_start, release_start
    from studies.ingest.gaze.synthetic import EgdSpec, ReflacxSpec, write_egd, write_reflacx
    from studies.models import GazeRecording, Patient, Report, Study
    from studies.services.gaze import gaze_import
    from tests.releases.factories import reviewed_case

    users = {}
    counter = iter(range(1000))

    def make_user(name=None):
        user = get_user_model().objects.create_user(
            username=name or f"u{next(counter)}", password="correct-horse-battery-" + "x" * 8
        )
        users[user.username] = user
        return user

    alpha = project_create(slug="alpha", name="Alpha")
    beta = project_create(slug="beta", name="Beta")
    gamma = project_create(slug="gamma", name="Gamma")
    scan = reviewed_case(alpha, folder, make_user, accept=1, reject=1)  # makes ann-alpha and rad-alpha
    people = {
        "manager": make_user("manager"),
        "annotator": users["ann-alpha"],
        "radiologist": users["rad-alpha"],
        "researcher": make_user("researcher"),
        "outsider": make_user("outsider"),
    }
    membership_set(project=alpha, user=people["manager"], role=Role.MANAGER)
    membership_set(project=alpha, user=people["researcher"], role=Role.RESEARCHER)
    for role in ROLES:
        membership_set(project=gamma, user=people[role], role=role)
    membership_set(project=beta, user=people["outsider"], role=Role.MANAGER)

    annotator = people["annotator"]
    accepted = Finding.objects.get(project=alpha, status="accepted")
    rejected = Finding.objects.get(project=alpha, status="rejected")
    open_finding = Finding.objects.filter(project=alpha, status="open").order_by("id").first()
    if open_finding is None:
        open_finding = finding_create(
            project=alpha, user=annotator, study=scan.study, scan=scan, text="Mild emphysema."
        ).finding
    task_claim(task_id=open_finding.task.pk, user=annotator, stages=(Stage.ANNOTATE,))
    mask = np.zeros(tuple(scan.shape), bool)
    mask[2:6, 2:6, 1:3] = True
    draft = annotation_save(
        task_id=open_finding.task.pk, user=annotator, base_version=open_finding.current_version,
        kind="mask", mask=mask,
    )  # fmt: skip
    # a finding with its readers: the annotator holds reading 1 and saved a (blinded) version
    alpha.readers_per_finding = 2
    alpha.save(update_fields=["readers_per_finding"])
    read_task = finding_create(
        project=alpha, user=annotator, study=scan.study, scan=scan, text="A second nodule."
    )  # fmt: skip
    assert read_task.stage == Stage.READ
    reading = read_task.finding.readings.get(reader=annotator)
    blinded = readers.reading_save(
        reading_id=reading.pk, user=annotator, base_version=read_task.finding.current_version,
        kind="mask", mask=mask,
    )  # fmt: skip

    job = job_create(project=alpha, kind="test")
    clicked = job_create(  # a click's job (its answer: the clicker's alone)
        project=alpha, kind="interactive", user=annotator, params={"finding": open_finding.pk}
    )
    version = ModelVersion.objects.create(
        project=alpha, name="net", version=1, task="segmentation", format="state-dict",
        input_spec={"ndim": 3}, label_names=["background", "nodule"], weights="x", checksum="0" * 64,
    )  # fmt: skip
    training = TrainingRun.objects.create(project=alpha, parent=version, name="net")
    # a PACS source nothing answers at (port 9), and an import of it
    from pacs.models import PacsImport, PacsSource

    pacs_source = PacsSource.objects.create(
        project=alpha, name="hospital", base_url="http://127.0.0.1:9/dicom-web"
    )
    pacs_spare = PacsSource.objects.create(
        project=alpha, name="spare", base_url="http://127.0.0.1:9/dicom-web"
    )
    pacs_job = job_create(project=alpha, kind="pacs_import", params={"source": "hospital"})
    pacs_import = PacsImport.objects.create(
        project=alpha, source=pacs_source, job=pacs_job, study_uids=["1.2.3"]
    )

    dataset = dataset_create(slug="lungs", name="Lungs", projects=[alpha], user=people["researcher"])
    release = release_start(dataset=dataset, selection={}, user=people["researcher"], notes="")
    release.refresh_from_db()
    assert release.status == "frozen", release.error
    export = export_start(release=release, fmt_name="monai", user=people["researcher"])
    export.refresh_from_db()
    assert export.status == "succeeded", export.error

    egd = write_egd(folder / "egd", recordings=[EgdSpec(image_size=(400, 300), n_fixations=40)])
    reflacx = write_reflacx(folder / "rf", recordings=[ReflacxSpec(image_size=(300, 360), n_fixations=30)])
    for root, fmt in ((egd, "egd"), (reflacx, "reflacx")):
        assert gaze_import(project=gamma, path=root, fmt=fmt).errors == []
    gaze_run = gaze_run_execute(run=gaze_run_get_or_create(project=gamma, params={"lead_s": 1.0}), workers=1)

    def event(finding):
        return HistoryEvent.objects.filter(finding=finding).order_by("id").first()

    world = {
        **{f"user_{k}": v for k, v in people.items()},
        "alpha": alpha,
        "patient": Patient.objects.filter(project=alpha).first(),
        "study": Study.objects.filter(project=alpha).first(),
        "scan": scan,
        "report": Report.objects.filter(project=alpha).first(),
        "recording": GazeRecording.objects.filter(project=gamma).order_by("id").first(),
        "job": job,
        "interactive_job": clicked,
        "label_run": LabelRun.objects.filter(project=alpha).first(),
        "finding_proposal": FindingProposal.objects.filter(project=alpha).first(),
        "gaze_run": gaze_run,
        "heatmap": GazeHeatmap.objects.filter(run=gaze_run).first(),
        "sentence": GazeSentence.objects.filter(run=gaze_run).first(),
        "anatomy_record": GazeAnatomyRecord.objects.filter(run=gaze_run).exclude(focus_mask="").first(),
        "region_proposal": RegionProposal.objects.filter(project=gamma).exclude(mask="").first(),
        "model": version,
        "training_run": training,
        "pacs_source": pacs_source,
        "pacs_source_spare": pacs_spare,
        "pacs_import": pacs_import,
        "finding_accepted": accepted,
        "finding_open": open_finding,
        "finding_rejected": rejected,
        "task_accepted": ReviewTask.objects.get(finding=accepted),
        "task_open": ReviewTask.objects.get(finding=open_finding),
        "reading": reading,
        "annotation_accepted": Annotation.objects.get(finding=accepted, version=accepted.current_version),
        "annotation_open": draft,
        "annotation_blinded": blinded,
        "event_accepted": event(accepted),
        "event_open": HistoryEvent.objects.filter(finding=open_finding, user=annotator).first(),
        "event_blinded": HistoryEvent.objects.filter(finding=read_task.finding, user=annotator).first(),
        "dataset": dataset,
        "release": release,
        "export": export,
    }
    empty = sorted(k for k, v in world.items() if v is None)
    assert not empty, f"the world lacks {empty}"
    return world


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """Built once for the module (outside the tests' transactions), removed at its end."""
    from django.core.management import call_command

    folder = tmp_path_factory.mktemp("matrix")
    media = folder / "media"
    with override_settings(
        MEDIA_ROOT=str(media), PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
    ):
        with django_db_blocker.unblock():
            built = _world(folder)
        yield {**built, "_media": str(media)}
        with django_db_blocker.unblock():
            call_command("flush", "--noinput", verbosity=0)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _media_root(settings, request):
    """The world's files stay where it stored them (overrides the suite's per-test media folder)."""
    if "world" in request.fixturenames:
        settings.MEDIA_ROOT = request.getfixturevalue("world")["_media"]
    return settings.MEDIA_ROOT


def _client(world: dict, role: str, token: bool = False) -> APIClient:
    client = APIClient()
    if role != "anonymous" and token:
        from knox.models import AuthToken

        _, key = AuthToken.objects.create(world[f"user_{role}"])
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    elif role != "anonymous":
        client.force_login(world[f"user_{role}"])
    return client


def _ids(response) -> set:
    body = response.json()
    rows = body.get("results", body) if isinstance(body, dict) else body
    return {row.get("id", row.get("slug")) for row in rows if isinstance(row, dict)}


def _row_id(world: dict, key: str):
    obj = world[key]
    return obj.slug if key == "dataset" else obj.pk


CASES = [(name, i) for name, cases in RULES.items() for i in range(len(cases))]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}[{i}]" for n, i in CASES])
def test_route_rule(world, name, index):
    from django.urls import reverse

    case = RULES[name][index]
    url = reverse(name, args=case.args(world))
    outcomes = {}
    for role in EVERYONE:
        with transaction.atomic():  # each caller meets the same world
            client = _client(world, role, case.token)
            kwargs = {"format": "json"} if case.body is not None else {}
            send = getattr(client, case.method)
            if case.method == "get":
                response = send(url, case.query(world))
            else:
                response = send(url, case.body or {}, **kwargs)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
            outcomes[role] = response.status_code
            rows = _ids(response) if case.rows and response.status_code == 200 else set()
            transaction.set_rollback(True)
        status = response.status_code
        where = f"{case.method.upper()} {url} ({case.note or name}) as {role}: {status}"
        assert status < 500, where
        if role in case.allowed:
            assert status not in (401, 403, 404, 405), f"{where}, but the rule allows {role}"
        elif role == "anonymous":
            assert status in (401, 403, 302), f"{where}, but anonymous callers are refused"
        else:
            assert status in (403, 404), f"{where}, but the rule refuses {role}"
        for key, seers in case.rows.items():
            if role in ("anonymous",):
                continue
            seen = _row_id(world, key) in rows
            assert seen == (role in seers), f"{where}: row {key} {'shown' if seen else 'hidden'}"
