"""Datasets of the project, their releases (freeze the next version) and exports (start one, follow its
progress, download it), through the releases selectors and services the API uses."""

from django.contrib import messages
from django.http import Http404

from console.selectors import project_datasets
from console.views.base import allow, back_to, console_page, render_page, serializer_messages
from core.models import Role
from core.selectors import role_require
from releases import selectors as release_selectors
from releases import services as release_services
from releases.api.views import DatasetIn, ExportIn, ReleaseIn
from releases.labels import SOURCES, STATUSES

WRITERS = [Role.MANAGER, Role.RESEARCHER]


def _refused(request, slug: str, errors):
    for line in serializer_messages(errors):
        messages.error(request, line)
    return back_to("console-releases", slug)


@allow("get")
@console_page()
def releases_page(request, project):
    """The datasets drawing from the project with their releases and exports, and the forms."""
    context = {
        "datasets": project_datasets(request.user, project),
        "formats": sorted(release_services.export_formats()),
        "statuses": STATUSES,
        "sources": [*SOURCES, "both"],
    }
    return render_page(request, project, "console/releases.html", context, tool="releases")


@allow("post")
@console_page("console-releases")
def dataset_create_view(request, project):
    """A dataset drawing from this project (``slug``, ``name``, ``licence``, ``citation``)."""
    role_require(request.user, project, WRITERS, "managers and researchers")
    fields = ("slug", "name", "licence", "citation", "description")
    checked = DatasetIn(data={**{k: request.POST.get(k, "") for k in fields}, "projects": [project.slug]})
    if not checked.is_valid():
        return _refused(request, project.slug, checked.errors)
    v = checked.validated_data
    dataset = release_services.dataset_create(
        slug=v["slug"], name=v["name"], projects=[project], user=request.user,
        description=v["description"], licence=v["licence"], citation=v["citation"],
    )  # fmt: skip
    messages.success(request, f"Dataset {dataset.slug} created.")
    return back_to("console-releases", project.slug)


def _dataset_of_project(request, project, slug: str, *, write: bool = False):
    dataset = release_selectors.dataset_get_for_user(request.user, slug, write=write)
    if not dataset.projects.filter(pk=project.pk).exists():
        raise Http404("No such dataset in this project.")
    return dataset


@allow("post")
@console_page("console-releases")
def release_create_view(request, project, dataset_slug: str):
    """Freeze the next version of the dataset: ``statuses`` (checkboxes), ``sources`` (human, weak or
    both), ``modalities`` (comma-separated), ``seed`` and ``notes``; a job builds it."""
    dataset = _dataset_of_project(request, project, dataset_slug, write=True)
    data = {"seed": request.POST.get("seed") or 0, "notes": request.POST.get("notes", "")}
    if statuses := request.POST.getlist("statuses"):
        data["statuses"] = statuses
    if sources := request.POST.get("sources"):
        data["sources"] = sources
    if modalities := [m.strip() for m in request.POST.get("modalities", "").split(",") if m.strip()]:
        data["modalities"] = modalities
    checked = ReleaseIn(data=data)
    if not checked.is_valid():
        return _refused(request, project.slug, checked.errors)
    selection = dict(checked.validated_data)
    notes = selection.pop("notes")
    release = release_services.release_start(
        dataset=dataset, selection=selection, user=request.user, notes=notes
    )
    messages.success(
        request, f"Release {dataset.slug} v{release.version} is being frozen: job {release.job_id}."
    )
    return back_to("console-releases", project.slug)


@allow("post")
@console_page("console-releases")
def export_create_view(request, project, release_id: int):
    """Export a frozen release in ``format`` as a job; its files download when it has finished."""
    release = release_selectors.release_get_for_user(request.user, release_id)
    _dataset_of_project(request, project, release.dataset.slug)
    checked = ExportIn(data={"format": request.POST.get("format", "")})
    if not checked.is_valid():
        return _refused(request, project.slug, checked.errors)
    export = release_services.export_start(
        release=release, fmt_name=checked.validated_data["format"], user=request.user
    )
    messages.success(
        request, f"Export {export.pk} of {release.dataset.slug} v{release.version} ({export.format}) started."
    )
    return back_to("console-releases", project.slug)
