from django.urls import path

from releases.api import views

urlpatterns = [
    path("datasets/", views.DatasetList.as_view(), name="dataset-list"),
    path("datasets/<slug:slug>/", views.DatasetDetail.as_view(), name="dataset-detail"),
    path("datasets/<slug:slug>/releases/", views.DatasetReleases.as_view(), name="dataset-releases"),
    path("releases/<int:pk>/", views.ReleaseDetail.as_view(), name="release-detail"),
    path("releases/<int:pk>/manifest/", views.ReleaseManifest.as_view(), name="release-manifest"),
    path("releases/<int:pk>/card/", views.ReleaseCard.as_view(), name="release-card"),
    path("releases/<int:pk>/diff/", views.ReleaseDiff.as_view(), name="release-diff"),
    path("releases/<int:pk>/exports/", views.ReleaseExports.as_view(), name="release-exports"),
    path("release-exports/<int:pk>/", views.ExportDetail.as_view(), name="export-detail"),
    path("release-exports/<int:pk>/archive/", views.ExportArchive.as_view(), name="export-archive"),
    path("release-exports/<int:pk>/files/<path:path>", views.ExportFile.as_view(), name="export-file"),
]
