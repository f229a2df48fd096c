"""Label runs (report labels: rules, LLM, ensemble; gaze labels) and pre-annotation runs, each started
through the labeling or ml service the API uses, with the API's input serializer and role check."""

import json

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse

from console.selectors import (
    project_gaze_count,
    project_gaze_runs,
    project_jobs,
    project_label_runs,
    project_ready_models,
    project_report_count,
    project_scans,
)
from console.views.base import allow, back_to, console_page, render_page, serializer_messages
from core.errors import FieldError
from core.models import Role
from core.selectors import role_require
from labeling.api.gaze_serializers import GazeRunIn
from labeling.api.serializers import LabelRunIn
from labeling.gaze.presets import DEFAULT as DEFAULT_PRESET
from labeling.gaze.presets import PRESETS
from labeling.gaze.service import gaze_run_start
from labeling.labelers import LABELERS
from labeling.services import label_run_start
from ml.api.views import PreannotateIn
from ml.preannotate import GENERATORS, preannotate_start
from studies.selectors import scan_get_for_user

WRITERS = [Role.MANAGER, Role.RESEARCHER]
GAZE_METHODS = ("auto", "reflacx", "egd", "custom")
GAZE_REGIONS = ("anatomy", "fgcxr")


def _json_params(raw: str, field: str = "params") -> dict:
    raw = (raw or "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FieldError(field, f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise FieldError(field, 'a JSON object, e.g. {"endpoint": "local"}')
    return value


def _refused(request, slug: str, errors, page: str = "console-labels"):
    for line in serializer_messages(errors):
        messages.error(request, line)
    return back_to(page, slug)


@allow("get")
@console_page()
def labels_page(request, project):
    """The project's report label runs and gaze label runs with their progress, and the forms that start
    them."""
    context = {
        "label_runs": project_label_runs(request.user, project)[:20],
        "gaze_runs": project_gaze_runs(request.user, project)[:20],
        "labelers": LABELERS,
        "n_reports": project_report_count(request.user, project),
        "n_gaze": project_gaze_count(request.user, project),
        "presets": list(PRESETS),
        "default_preset": DEFAULT_PRESET,
        "methods": GAZE_METHODS,
        "regions": GAZE_REGIONS,
    }
    return render_page(request, project, "console/labels.html", context, tool="labels")


@allow("post")
@console_page("console-labels")
def label_run_start_view(request, project):
    """Start (or resume) a report label run: ``labeler`` and, for LLM runs, ``endpoint`` and ``model``
    (the names the server's settings configure), or ``params`` as JSON."""
    role_require(request.user, project, WRITERS, "managers and researchers")
    params = _json_params(request.POST.get("params", ""))
    for name in ("endpoint", "model"):
        if value := request.POST.get(name, "").strip():
            params[name] = value
    checked = LabelRunIn(data={"labeler": request.POST.get("labeler", "rules"), "params": params})
    if not checked.is_valid():
        return _refused(request, project.slug, checked.errors)
    try:
        run = label_run_start(
            project=project,
            labeler=checked.validated_data["labeler"],
            params=checked.validated_data["params"],
            user=request.user,
        )
    except FieldError:
        raise
    except ValueError as exc:  # a labeler that cannot be set up (no LLM configured, bad params): as the API
        raise FieldError("labeler", str(exc)) from exc
    messages.success(request, f"Label run {run.pk} ({run.labeler}) started: job {run.job_id}.")
    return back_to("console-labels", project.slug)


@allow("post")
@console_page("console-labels")
def gaze_run_start_view(request, project):
    """Start (or resume) a gaze label run with a ``preset``, ``method``, ``regions`` and ``lead_s``."""
    role_require(request.user, project, WRITERS, "managers and researchers")
    params = _json_params(request.POST.get("params", ""))
    for name in ("preset", "method", "regions"):
        if value := request.POST.get(name, "").strip():
            params[name] = value
    if lead := request.POST.get("lead_s", "").strip():
        try:
            params["lead_s"] = float(lead)
        except ValueError as exc:
            raise FieldError("lead_s", f"a number of seconds, got {lead!r}") from exc
    checked = GazeRunIn(data={"params": params})
    if not checked.is_valid():
        return _refused(request, project.slug, checked.errors)
    try:
        run = gaze_run_start(project=project, params=checked.validated_data["params"], user=request.user)
    except FieldError:
        raise
    except (ValueError, TypeError) as exc:  # the parameters' own checks name the field first ("preset: ...")
        field, _, reason = str(exc).partition(": ")
        raise FieldError(field if reason and " " not in field else "params", reason or str(exc)) from exc
    messages.success(request, f"Gaze label run {run.pk} started: job {run.job_id}.")
    return back_to("console-labels", project.slug)


@allow("get", "post")
@console_page("console-preannotate")
def preannotate_page(request, project):
    """GET: the scans with their region proposal counts, the generators and ready models, the
    pre-annotation jobs. POST ``scan`` + ``generator``: a pre-annotation job (``gpu`` queue)."""
    generators = [*GENERATORS, *project_ready_models(request.user, project)]
    if request.method == "POST":
        raw = request.POST.get("scan", "")
        if not raw.isdigit():
            raise FieldError("scan", "choose a scan")
        scan = scan_get_for_user(request.user, int(raw))
        if scan.project_id != project.pk:
            raise FieldError("scan", f"scan {raw} is not in {project.slug}")
        role_require(
            request.user, project, [*WRITERS, Role.ANNOTATOR], "managers, researchers and annotators"
        )
        checked = PreannotateIn(data={"generator": request.POST.get("generator", ""), "params": {}})
        if not checked.is_valid():
            return _refused(request, project.slug, checked.errors, "console-preannotate")
        generator = checked.validated_data["generator"]
        if generator not in generators:
            raise FieldError("generator", f"choose one of {', '.join(generators)}")
        job = preannotate_start(scan=scan, generator=generator, params={}, user=request.user)
        messages.success(request, f"Pre-annotation of scan {scan.pk} with {generator} started: job {job.pk}.")
        return HttpResponseRedirect(reverse("console-job", args=[project.slug, job.pk]))
    context = {
        "scans": project_scans(request.user, project),
        "generators": generators,
        "jobs": project_jobs(request.user, project, kinds=("preannotate",)).order_by("-id")[:20],
    }
    return render_page(request, project, "console/preannotate.html", context, tool="preannotate")
