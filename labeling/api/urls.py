from django.urls import path

from labeling.api import gaze, views

urlpatterns = [
    path("projects/<slug:slug>/label-runs/", views.LabelRuns.as_view(), name="label-runs"),
    path("label-runs/<int:pk>/", views.LabelRunDetail.as_view(), name="label-run-detail"),
    path("proposals/", views.ProposalList.as_view(), name="proposal-list"),
    path("projects/<slug:slug>/gaze-label-runs/", gaze.GazeRuns.as_view(), name="gaze-label-runs"),
    path("gaze-label-runs/<int:pk>/", gaze.GazeRunDetail.as_view(), name="gaze-label-run-detail"),
    path("gaze-label-runs/<int:pk>/results/", gaze.GazeRunResults.as_view(), name="gaze-label-run-results"),
    path("gaze-recordings/<int:pk>/gaze-labels/", gaze.RecordingGazeLabels.as_view(), name="gaze-labels-one"),
    path("gaze-recordings/<int:pk>/heatmap/", gaze.RecordingHeatmap.as_view(), name="gaze-recording-heatmap"),
    path(
        "gaze-recordings/<int:pk>/anatomy-masks/",
        gaze.AnatomyMaskUpload.as_view(),
        name="anatomy-mask-upload",
    ),
    path("gaze-heatmaps/", gaze.GazeHeatmapList.as_view(), name="gaze-heatmap-list"),
    path("gaze-heatmaps/<int:pk>/array/", gaze.GazeHeatmapArray.as_view(), name="gaze-heatmap-array"),
    path("gaze-heatmaps/<int:pk>/png/", gaze.GazeHeatmapPng.as_view(), name="gaze-heatmap-png"),
    path("gaze-sentences/", gaze.GazeSentenceList.as_view(), name="gaze-sentence-list"),
    path("gaze-anatomy-records/", gaze.AnatomyRecordList.as_view(), name="anatomy-record-list"),
    path("gaze-anatomy-records/<int:pk>/focus.png", gaze.AnatomyFocusPng.as_view(), name="anatomy-focus-png"),
    path("region-proposals/", gaze.RegionProposalList.as_view(), name="region-proposal-list"),
    path(
        "region-proposals/<int:pk>/mask/", gaze.RegionProposalMask.as_view(), name="region-proposal-mask-file"
    ),
    path(
        "region-proposals/<int:pk>/mask.png", gaze.RegionProposalMask.as_view(), name="region-proposal-mask"
    ),
]
