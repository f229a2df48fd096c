from django.urls import include, path
from rest_framework.authtoken.views import obtain_auth_token

from core.api import views

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="auth-token"),
    path("auth/", include("rest_framework.urls")),
    path("projects/", views.ProjectList.as_view(), name="project-list"),
    path("projects/<slug:slug>/", views.ProjectDetail.as_view(), name="project-detail"),
    path("projects/<slug:slug>/jobs/", views.JobList.as_view(), name="job-list"),
    path("jobs/<int:pk>/", views.JobDetail.as_view(), name="job-detail"),
]
