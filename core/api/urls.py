from django.urls import include, path

from core.api import auth, views

urlpatterns = [
    path("auth/token/", auth.TokenCreate.as_view(), name="auth-token"),
    path("auth/token/revoke/", auth.TokenRevoke.as_view(), name="auth-token-revoke"),
    path("auth/token/revoke-all/", auth.TokenRevokeAll.as_view(), name="auth-token-revoke-all"),
    path("auth/", include("rest_framework.urls")),
    path("projects/", views.ProjectList.as_view(), name="project-list"),
    path("projects/<slug:slug>/", views.ProjectDetail.as_view(), name="project-detail"),
    path("projects/<slug:slug>/jobs/", views.JobList.as_view(), name="job-list"),
    path("jobs/<int:pk>/", views.JobDetail.as_view(), name="job-detail"),
]
