"""The Celery app. Queues: ``default`` (ingest, export), ``llm``, ``gpu``; routes in settings."""

import os

from celery import Celery
from celery.app.routes import MapRoute

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("groundlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class QueueTimeLimits:
    """Task annotation (``CELERY_TASK_ANNOTATIONS``): each task gets the soft and hard time limits of the
    queue ``CELERY_TASK_ROUTES`` sends it to (``JOB_TIME_LIMITS``); a task of another queue keeps the
    global ``CELERY_TASK_TIME_LIMIT``."""

    def annotate(self, task):
        from django.conf import settings

        route = MapRoute(settings.CELERY_TASK_ROUTES)(task.name) or {}
        limits = settings.JOB_TIME_LIMITS.get(route.get("queue", settings.CELERY_TASK_DEFAULT_QUEUE))
        if limits is None:
            return None
        return {"soft_time_limit": limits["soft"], "time_limit": limits["hard"]}
