from django.db.models import Count
from django.shortcuts import render

from core.selectors import projects_for_user


def home(request):
    projects = projects_for_user(request.user).annotate(
        n_patients=Count("patients", distinct=True),
        n_scans=Count("scans", distinct=True),
        n_reports=Count("reports", distinct=True),
        n_gaze=Count("gaze_recordings", distinct=True),
    )
    scans = []
    if request.user.is_authenticated:
        from studies.selectors import scans_for_user

        scans = scans_for_user(request.user).order_by("-id")[:12]
    return render(request, "core/home.html", {"projects": projects, "scans": scans})
