from django.urls import path

from studies.api import files, uploads, views

urlpatterns = [
    path("projects/<slug:slug>/uploads/", uploads.UploadCreate.as_view(), name="upload-create"),
    path("projects/<slug:slug>/identity-map/", views.IdentityMap.as_view(), name="identity-map"),
    path("patients/", views.PatientList.as_view(), name="patient-list"),
    path("patients/<int:pk>/", views.PatientDetail.as_view(), name="patient-detail"),
    path("studies/", views.StudyList.as_view(), name="study-list"),
    path("studies/<int:pk>/", views.StudyDetail.as_view(), name="study-detail"),
    path("scans/", views.ScanList.as_view(), name="scan-list"),
    path("scans/<int:pk>/", views.ScanDetail.as_view(), name="scan-detail"),
    path("scans/<int:pk>/nifti/", files.ScanNifti.as_view(), name="scan-nifti"),
    path("scans/<int:pk>/png/", files.ScanPng.as_view(), name="scan-png"),
    path("scans/<int:pk>/thumbnail/", files.ScanThumbnail.as_view(), name="scan-thumbnail"),
    path("reports/", views.ReportList.as_view(), name="report-list"),
    path("reports/<int:pk>/", views.ReportDetail.as_view(), name="report-detail"),
    path("gaze-recordings/", views.GazeRecordingList.as_view(), name="gaze-list"),
    path("gaze-recordings/<int:pk>/", views.GazeRecordingDetail.as_view(), name="gaze-detail"),
]
