"""Celery: a broker from ``CELERY_BROKER_URL``; with none, tasks run in-process (embedded default).

A configured broker that is down is an error the caller sees (``core.jobs.job_dispatch`` raises),
never a silent switch to in-process execution.
"""

from config.settings.env import env_bool, env_int, env_str

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
# In-process (no broker), a job of the `gpu` queue (models, TorchScript) runs in a child process
# (`manage.py job_exec`, core.job_child), never in the web process; false: in-process like the others.
EMBEDDED_GPU_JOBS_IN_CHILD = env_bool("EMBEDDED_GPU_JOBS_IN_CHILD", True)
CELERY_TASK_IGNORE_RESULT = True  # job state lives in core.Job rows, not in a result store
CELERY_TASK_ACKS_LATE = True  # a killed worker's task is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 4 * 3600)}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "studies.*": {"queue": "default"},
    "core.*": {"queue": "default"},
    "labeling.llm.*": {"queue": "llm"},
    "labeling.*": {"queue": "default"},
    "ml.*": {"queue": "gpu"},
}
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 6 * 3600)
# `celery -A config beat`: fail jobs whose process died (lapsed lease) and remove their raw uploads.
CELERY_BEAT_SCHEDULE = {"jobs-reap": {"task": "core.jobs_reap", "schedule": 60.0}}
