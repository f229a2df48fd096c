"""The Celery app. Queues: ``default`` (ingest, export), ``llm``, ``gpu``; routes in settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("groundlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
