from django.urls import path

from pacs.api import views

urlpatterns = [
    path("projects/<slug:slug>/pacs/sources/", views.SourceList.as_view(), name="pacs-sources"),
    path("projects/<slug:slug>/pacs/sources/<int:pk>/", views.SourceDetail.as_view(), name="pacs-source"),
    path(
        "projects/<slug:slug>/pacs/sources/<int:pk>/check/",
        views.SourceCheck.as_view(),
        name="pacs-source-check",
    ),
    path(
        "projects/<slug:slug>/pacs/sources/<int:pk>/studies/",
        views.SourceStudies.as_view(),
        name="pacs-studies",
    ),
    path("projects/<slug:slug>/pacs/imports/", views.ImportList.as_view(), name="pacs-imports"),
    path("projects/<slug:slug>/pacs/imports/<int:pk>/", views.ImportDetail.as_view(), name="pacs-import"),
    path("projects/<slug:slug>/pacs/store-backs/", views.StoreBackList.as_view(), name="pacs-store-backs"),
]
