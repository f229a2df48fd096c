"""Reads of studies data, always through the caller's project memberships (others' objects: 404)."""

from django.db.models import Count, QuerySet
from django.http import Http404

from core.models import Membership, Project, Role
from core.selectors import project_get_for_user, projects_for_user
from studies.models import GazeRecording, Patient, PatientIdentity, Report, Scan, Study


def _visible(qs: QuerySet, user) -> QuerySet:
    return qs.filter(project__in=projects_for_user(user))


def _get(qs: QuerySet, pk: int, what: str):
    obj = qs.filter(pk=pk).first()
    if obj is None:
        raise Http404(f"No such {what}.")
    return obj


def patients_for_user(user) -> QuerySet[Patient]:
    return _visible(Patient.objects.select_related("project"), user).annotate(study_count=Count("studies"))


def patient_get_for_user(user, patient_id: int) -> Patient:
    return _get(patients_for_user(user), patient_id, "patient")


def studies_for_user(user) -> QuerySet[Study]:
    return _visible(Study.objects.select_related("project", "patient"), user).annotate(
        scan_count=Count("scans")
    )


def study_get_for_user(user, study_id: int) -> Study:
    return _get(studies_for_user(user), study_id, "study")


def scans_for_user(user) -> QuerySet[Scan]:
    return _visible(Scan.objects.select_related("project", "study", "study__patient"), user)


def scan_get_for_user(user, scan_id: int) -> Scan:
    return _get(scans_for_user(user), scan_id, "scan")


def reports_for_user(user) -> QuerySet[Report]:
    return _visible(Report.objects.select_related("project", "study"), user)


def report_get_for_user(user, report_id: int) -> Report:
    return _get(reports_for_user(user), report_id, "report")


def gaze_recordings_for_user(user) -> QuerySet[GazeRecording]:
    return _visible(GazeRecording.objects.select_related("project", "scan"), user).prefetch_related(
        "anatomy_masks"
    )


def gaze_recording_get_for_user(user, recording_id: int) -> GazeRecording:
    return _get(gaze_recordings_for_user(user), recording_id, "gaze recording")


def identity_map_for_manager(user, slug: str) -> tuple[Project, QuerySet[PatientIdentity]]:
    """The original-to-pseudonym map of a project, with each patient's date shift: managers only
    (everyone else: 404), and empty unless the project keeps the map (``keep_identity_map``; rows left
    from a time it was on stay hidden)."""
    project = project_get_for_user(user, slug, roles=[Role.MANAGER])
    if not project.keep_identity_map:
        return project, PatientIdentity.objects.none()
    return project, PatientIdentity.objects.filter(patient__project=project).select_related("patient")


def identities_for_user(user) -> QuerySet[PatientIdentity]:
    """Original identifiers the user may see: those of the projects they manage (superusers: all). The
    admin's identity pages read through this; the API's identity map through ``identity_map_for_manager``."""
    identities = PatientIdentity.objects.select_related("patient", "patient__project")
    if not user.is_authenticated or not user.is_active:
        return identities.none()
    if user.is_superuser:
        return identities
    managed = Membership.objects.filter(user=user, role=Role.MANAGER).values("project_id")
    return identities.filter(patient__project_id__in=managed)
