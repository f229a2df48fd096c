from django.urls import path

from ml.api import views

urlpatterns = [
    path("projects/<slug:slug>/models/", views.ProjectModels.as_view(), name="project-models"),
    path("models/<int:pk>/", views.ModelVersionDetail.as_view(), name="model-version-detail"),
    path("scans/<int:pk>/preannotate/", views.ScanPreannotate.as_view(), name="scan-preannotate"),
    path(
        "projects/<slug:slug>/training-runs/",
        views.ProjectTrainingRuns.as_view(),
        name="project-training-runs",
    ),
    path("training-runs/<int:pk>/", views.TrainingRunDetail.as_view(), name="training-run-detail"),
    path(
        "projects/<slug:slug>/active-learning/", views.ProjectActiveLearning.as_view(), name="active-learning"
    ),
]
