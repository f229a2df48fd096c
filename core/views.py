from django.db.models import Count, OuterRef, Subquery
from django.shortcuts import render

from core.models import Membership
from core.selectors import projects_for_user


def home(request):
    role = Membership.objects.filter(project=OuterRef("pk"), user=request.user.pk).values("role")[:1]
    projects = projects_for_user(request.user).annotate(
        my_role=Subquery(role),
        n_patients=Count("patients", distinct=True),
        n_scans=Count("scans", distinct=True),
        n_reports=Count("reports", distinct=True),
        n_gaze=Count("gaze_recordings", distinct=True),
    )
    scans = []
    if request.user.is_authenticated:
        from studies.selectors import scans_for_user

        scans = scans_for_user(request.user).order_by("-id")[:12]
    projects = list(projects)
    for p in projects:  # managers (and superusers) run their projects from the console
        p.manages = request.user.is_superuser or p.my_role == "manager"
    manages = any(p.manages for p in projects)
    return render(request, "core/home.html", {"projects": projects, "scans": scans, "manages": manages})
