from django.urls import path

from annotation.api import findings, interactive, queue, readings, tasks

urlpatterns = [
    path(
        "projects/<slug:slug>/findings/from-proposals/",
        findings.FindingsFromProposals.as_view(),
        name="findings-from-proposals",
    ),
    path("projects/<slug:slug>/findings/", findings.FindingCreate.as_view(), name="finding-create"),
    path("projects/<slug:slug>/next-task/", tasks.NextTask.as_view(), name="next-task"),
    path("tasks/<int:pk>/", tasks.TaskDetail.as_view(), name="task-detail"),
    path("tasks/<int:pk>/claim/", tasks.TaskClaim.as_view(), name="task-claim"),
    path("tasks/<int:pk>/annotations/", tasks.TaskAnnotations.as_view(), name="task-annotations"),
    path("tasks/<int:pk>/submit/", tasks.TaskSubmit.as_view(), name="task-submit"),
    path("tasks/<int:pk>/approve/", tasks.TaskApprove.as_view(), name="task-approve"),
    path("tasks/<int:pk>/return/", tasks.TaskReturn.as_view(), name="task-return"),
    path("tasks/<int:pk>/assign/", tasks.TaskAssign.as_view(), name="task-assign"),
    path("projects/<slug:slug>/next-reading/", readings.NextReading.as_view(), name="next-reading"),
    path("readings/<int:pk>/", readings.ReadingDetail.as_view(), name="reading-detail"),
    path("readings/<int:pk>/annotations/", readings.ReadingAnnotations.as_view(), name="reading-annotations"),
    path("readings/<int:pk>/submit/", readings.ReadingSubmit.as_view(), name="reading-submit"),
    path("projects/<slug:slug>/agreement/", readings.ProjectAgreement.as_view(), name="project-agreement"),
    path("findings/", findings.FindingList.as_view(), name="finding-list"),
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
    path("history/", findings.HistoryList.as_view(), name="history-list"),
    path("annotations/<int:pk>/mask/", findings.AnnotationMask.as_view(), name="annotation-mask"),
    path("projects/<slug:slug>/queue/priorities/", queue.QueuePriorities.as_view(), name="queue-priorities"),
    path(
        "projects/<slug:slug>/training-runs/from-accepted/",
        queue.TrainFromAccepted.as_view(),
        name="train-from-accepted",
    ),
]
