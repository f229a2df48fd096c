from django.urls import path

from annotation.api import interactive, readings, views

urlpatterns = [
    path(
        "projects/<slug:slug>/findings/from-proposals/",
        views.FindingsFromProposals.as_view(),
        name="findings-from-proposals",
    ),
    path("projects/<slug:slug>/findings/", views.FindingCreate.as_view(), name="finding-create"),
    path("projects/<slug:slug>/next-task/", views.NextTask.as_view(), name="next-task"),
    path("tasks/<int:pk>/", views.TaskDetail.as_view(), name="task-detail"),
    path("tasks/<int:pk>/claim/", views.TaskClaim.as_view(), name="task-claim"),
    path("tasks/<int:pk>/annotations/", views.TaskAnnotations.as_view(), name="task-annotations"),
    path("tasks/<int:pk>/submit/", views.TaskTransition.as_view(action="submit"), name="task-submit"),
    path("tasks/<int:pk>/approve/", views.TaskTransition.as_view(action="approve"), name="task-approve"),
    path("tasks/<int:pk>/return/", views.TaskTransition.as_view(action="return"), name="task-return"),
    path("tasks/<int:pk>/assign/", views.TaskTransition.as_view(action="assign"), name="task-assign"),
    path("projects/<slug:slug>/next-reading/", readings.NextReading.as_view(), name="next-reading"),
    path("readings/<int:pk>/", readings.ReadingDetail.as_view(), name="reading-detail"),
    path("readings/<int:pk>/annotations/", readings.ReadingAnnotations.as_view(), name="reading-annotations"),
    path("readings/<int:pk>/submit/", readings.ReadingSubmit.as_view(), name="reading-submit"),
    path("projects/<slug:slug>/agreement/", readings.ProjectAgreement.as_view(), name="project-agreement"),
    path("findings/", views.FindingList.as_view(), name="finding-list"),
    path(
        "findings/<int:pk>/interactive/",
        interactive.FindingInteractive.as_view(),
        name="finding-interactive",
    ),
    path(
        "findings/<int:pk>/interactive/<int:job_id>/",
        interactive.FindingInteractiveAnswer.as_view(),
        name="finding-interactive-answer",
    ),
    path("history/", views.HistoryList.as_view(), name="history-list"),
    path("annotations/<int:pk>/mask/", views.AnnotationMask.as_view(), name="annotation-mask"),
    path("projects/<slug:slug>/queue/priorities/", views.QueuePriorities.as_view(), name="queue-priorities"),
    path(
        "projects/<slug:slug>/training-runs/from-accepted/",
        views.TrainFromAccepted.as_view(),
        name="train-from-accepted",
    ),
]
