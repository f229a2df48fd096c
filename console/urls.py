"""The manager's console: /console/ and /console/<slug>/... (server-rendered pages, forms with CSRF)."""

from django.urls import path

from console.views import data, labels, members, projects, releases, review

P = "<slug:slug>/"
urlpatterns = [
    path("", projects.project_list, name="console-projects"),
    path(P, projects.project_overview_page, name="console-project"),
    path(P + "members/", members.members_page, name="console-members"),
    path(P + "members/<int:user_id>/remove/", members.member_remove, name="console-member-remove"),
    path(P + "uploads/", data.UploadPage.as_view(), name="console-uploads"),
    path(P + "jobs/", data.jobs_page, name="console-jobs"),
    path(P + "jobs/<int:job_id>/", data.job_page, name="console-job"),
    path(P + "labels/", labels.labels_page, name="console-labels"),
    path(P + "labels/report-runs/", labels.label_run_start_view, name="console-label-run-start"),
    path(P + "labels/gaze-runs/", labels.gaze_run_start_view, name="console-gaze-run-start"),
    path(P + "preannotate/", labels.preannotate_page, name="console-preannotate"),
    path(P + "tasks/", review.tasks_page, name="console-tasks"),
    path(P + "queue/", review.queue_page, name="console-queue"),
    path(P + "tasks/<int:task_id>/assign/", review.task_assign_view, name="console-task-assign"),
    path(P + "releases/", releases.releases_page, name="console-releases"),
    path(P + "datasets/", releases.dataset_create_view, name="console-dataset-create"),
    path(
        P + "datasets/<slug:dataset_slug>/releases/",
        releases.release_create_view,
        name="console-release-create",
    ),
    path(P + "releases/<int:release_id>/exports/", releases.export_create_view, name="console-export-create"),
]
