"""The history of review work: one ``HistoryEvent`` per change (who, what, before and after), the state of
a task as events record it, and the length of a lease. Shared by the task services
(``annotation/services.py``), the readers' (``annotation/readers.py``) and findings from proposals
(``annotation/findings.py``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

from annotation.models import Finding, HistoryEvent, ReviewTask


def lease_length() -> timedelta:
    return timedelta(minutes=float(getattr(settings, "REVIEW_LEASE_MINUTES", 30)))


def event_add(
    finding: Finding | None,
    task: ReviewTask | None,
    user,
    action: str,
    before: dict | None = None,
    after: dict | None = None,
    comment: str = "",
) -> HistoryEvent:
    """Append one event (never changed afterwards) to the finding's (else the task's) project."""
    project_id = finding.project_id if finding is not None else task.project_id
    return HistoryEvent.objects.create(
        project_id=project_id,
        finding=finding,
        task=task,
        user=user,
        action=action,
        before=before or {},
        after=after or {},
        comment=comment,
    )


def task_state(task: ReviewTask) -> dict[str, Any]:
    """What events record of a task: its stage, who holds it, the annotator's decision."""
    return {"stage": task.stage, "assignee": task.assignee_id, "decision": task.decision}
