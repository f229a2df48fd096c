"""Celery adapters for model jobs (routed to the ``gpu`` queue by their ``ml.*`` names)."""

from celery import shared_task

from core.jobs import JobTask, job_run


@shared_task(name="ml.validate_model", base=JobTask)
def validate_model(*, job_id: int) -> None:
    """The forward-pass check of a new version; the model file is loaded in a child process
    (``ml.engine.check``), so never in the web server when jobs run in-process."""
    from ml.services import model_validate_job

    job_run(job_id=job_id, body=lambda job: model_validate_job(job=job))


@shared_task(name="ml.preannotate", base=JobTask)
def preannotate(*, job_id: int) -> None:
    from ml.preannotate import preannotate_job

    job_run(job_id=job_id, body=lambda job: preannotate_job(job=job))


@shared_task(name="ml.train_model", base=JobTask)
def train_model(*, job_id: int) -> None:
    """A training run; delivered again after a crash, it resumes from the run's last checkpoint."""
    from ml.training import training_job

    job_run(job_id=job_id, body=lambda job: training_job(job=job))


@shared_task(name="ml.score_cases", base=JobTask)
def score_cases(*, job_id: int) -> None:
    """Active-learning scores of a project's unlabelled scans."""
    from ml.active_learning import scores_job

    job_run(job_id=job_id, body=lambda job: scores_job(job=job))


@shared_task(name="ml.interactive", base=JobTask)
def interactive(*, job_id: int) -> None:
    """A click's proposal (``ml.interactive``): the interactive model's, or a region grow."""
    from ml.interactive import interactive_job

    job_run(job_id=job_id, body=lambda job: interactive_job(job=job))
