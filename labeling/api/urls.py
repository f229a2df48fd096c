from django.urls import path

from labeling.api import views

urlpatterns = [
    path("projects/<slug:slug>/label-runs/", views.LabelRuns.as_view(), name="label-runs"),
    path("label-runs/<int:pk>/", views.LabelRunDetail.as_view(), name="label-run-detail"),
    path("proposals/", views.ProposalList.as_view(), name="proposal-list"),
]
