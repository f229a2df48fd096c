"""The order of the review queue: open tasks re-prioritised by stored active-learning scores (managers'
button, and the learning loop after a better model version)."""

from __future__ import annotations

from django.db import transaction

from annotation.models import OPEN_STAGES, ReviewTask
from core.models import Project
from ml.active_learning import ActiveLearningError, ranked, strategy_check


def queue_reprioritise(*, project: Project, strategy: str, model_version=None, seed: int = 0) -> int:
    """Order the open tasks by an active-learning score: each task's priority becomes its scan's stored
    ``CaseScore`` for ``strategy`` and ``model_version`` (a ``power_`` strategy: the scan's place in the
    seeded noisy ranking of those scores, ``(n - k) / n`` for the k-th of n); tasks whose scan has none
    go last (-1). An unknown strategy, a model strategy without a model, or a strategy and version with no
    stored score at all is an ``ActiveLearningError`` and changes nothing. Returns how many tasks
    changed."""
    base = strategy_check(strategy, model_version)
    rows = ranked(project=project, strategy=strategy, version=model_version, seed=seed)
    if not rows:
        of = f"of {model_version.name} v{model_version.version} " if model_version is not None else ""
        raise ActiveLearningError(
            "strategy", f"no {base} scores {of}are stored in {project.slug}: compute them first"
        )
    if strategy.startswith("power_"):
        scores = {r.scan_id: (len(rows) - k) / len(rows) for k, r in enumerate(rows)}
    else:
        scores = {r.scan_id: r.score for r in rows}
    changed = 0
    with transaction.atomic():
        for task in (
            ReviewTask.objects.select_for_update(of=("self",))
            .filter(project=project, stage__in=OPEN_STAGES)
            .select_related("finding")
        ):
            priority = scores.get(task.finding.scan_id, -1.0)
            if task.priority != priority:
                task.priority = priority
                task.save(update_fields=["priority", "updated_at"])
                changed += 1
    return changed
