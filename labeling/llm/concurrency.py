"""Label many reports with at most ``labeler.concurrency`` in flight (threads: the work waits on HTTP)."""

import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext

from labeling.labelers import Labeler, LabelResult


def label_many(
    labeler: Labeler,
    sections_list: Sequence[dict[str, str]],
    *,
    schema: str,
    concurrency: int | None = None,
    on_done: Callable[[int, LabelResult | Exception], None] | None = None,
) -> list[LabelResult | Exception]:
    """``labeler.label`` of every report, in input order; a failed report gives its exception instead.

    ``concurrency`` defaults to ``labeler.concurrency`` (1 when the labeler has none). ``on_done(i, outcome)``
    is called from the worker thread as each report finishes (e.g. to store it). Each worker closes its own
    database connections when it ends. The labeler's ``batch()`` (when it has one) is held for the call: the
    LLM labeler groups its cache writes there and writes the rest before this returns.
    """
    batch = getattr(labeler, "batch", None)
    with batch() if batch is not None else nullcontext():
        return _label_many(labeler, sections_list, schema=schema, concurrency=concurrency, on_done=on_done)


def _label_many(labeler, sections_list, *, schema, concurrency, on_done):
    n = len(sections_list)
    prefetch = getattr(labeler, "prefetch", None)
    if prefetch is not None and n > 1:
        prefetch(sections_list, schema=schema)  # one cache query for all, not one per report
    results: list[LabelResult | Exception | None] = [None] * n
    workers = max(1, min(n, concurrency or getattr(labeler, "concurrency", 1) or 1))

    def one(i: int) -> None:
        try:
            outcome: LabelResult | Exception = labeler.label(sections_list[i], schema=schema)
        except Exception as exc:  # one report's failure never stops the others
            outcome = exc
        results[i] = outcome
        if on_done is not None:
            on_done(i, outcome)

    if workers == 1:
        for i in range(n):
            one(i)
        return results  # type: ignore[return-value]

    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(n):
        todo.put(i)
    errors: list[BaseException] = []

    def work() -> None:
        from django.db import connections

        try:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                one(i)
        except BaseException as exc:  # on_done failed: report it to the caller
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, name=f"label-{k}", daemon=True) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]
