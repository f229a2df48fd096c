"""Celery: a broker from ``CELERY_BROKER_URL``; with none, tasks run in-process (embedded default).

A configured broker that is down is an error the caller sees (``core.jobs.job_dispatch`` raises),
never a silent switch to in-process execution.
"""

from django.core.exceptions import ImproperlyConfigured

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
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "annotation.learning_loop": {"queue": "gpu"},  # trains and scores (annotation/loop.py)
    "studies.*": {"queue": "default"},
    "core.*": {"queue": "default"},
    "labeling.llm.*": {"queue": "llm"},
    "labeling.*": {"queue": "default"},
    "pacs.*": {"queue": "default"},  # DICOMweb imports and store-back
    "ml.*": {"queue": "gpu"},
}
# Jobs that end. Each delivery of a job counts an attempt (Job.attempts); a delivery that finds
# JOB_MAX_ATTEMPTS already (its worker died each time: out of memory, killed) fails the job without
# running it and is acknowledged (core.jobs.job_run).
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3)
# Soft and hard time limits per queue, in seconds (config.celery.QueueTimeLimits gives each task its
# queue's): past the soft limit the job fails ("ran past its time limit of N s"), past the hard limit the
# pool kills its process and the job fails the same way. JOB_SOFT_TIME_LIMIT_<QUEUE>, JOB_TIME_LIMIT_<QUEUE>.


def _time_limits(queue: str, soft: int) -> dict[str, int]:
    """``{"soft", "hard"}`` seconds of ``queue`` (the hard limit: 5 minutes past the soft one unless set)."""
    soft = env_int(f"JOB_SOFT_TIME_LIMIT_{queue.upper()}", soft)
    hard = env_int(f"JOB_TIME_LIMIT_{queue.upper()}", soft + 300)
    if not 0 < soft < hard:
        raise ImproperlyConfigured(
            f"JOB_SOFT_TIME_LIMIT_{queue.upper()} ({soft}) must be above 0 and below "
            f"JOB_TIME_LIMIT_{queue.upper()} ({hard})"
        )
    return {"soft": soft, "hard": hard}


JOB_TIME_LIMITS = {
    "default": _time_limits("default", 4 * 3600),  # ingest, exports, rule labels
    "llm": _time_limits("llm", 4 * 3600),
    "gpu": _time_limits("gpu", 8 * 3600),  # models: validation, pre-annotation, training, scores
}
# Tasks routed to a queue not named above: this hard limit only.
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 6 * 3600)
CELERY_TASK_ANNOTATIONS = ["config.celery.QueueTimeLimits"]
# An unacknowledged task goes to another worker after this long: above every hard limit, or a job that
# still runs would be delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int(
        "CELERY_VISIBILITY_TIMEOUT", max(limits["hard"] for limits in JOB_TIME_LIMITS.values()) + 600
    )
}
# A web process reaps too (config.wsgi / config.asgi start core.jobs.jobs_reaper_start): at start and
# then every JOB_REAP_INTERVAL_SECONDS (0: never), so that a job left running by a web process that died
# (an upload running in-process in the embedded default) is failed without a worker, beat or new job.
JOB_REAP_INTERVAL_SECONDS = env_int("JOB_REAP_INTERVAL_SECONDS", 60)
# `celery -A config beat`: fail jobs whose process died (lapsed lease) and remove their raw uploads.
CELERY_BEAT_SCHEDULE = {
    "jobs-reap": {"task": "core.jobs_reap", "schedule": 60.0},
    # PACS store-back (pacs/storeback.py): accepted masks sent as DICOM SEG, failed sends retried
    "pacs-store-back": {"task": "pacs.store_back_sweep", "schedule": 300.0},
}
