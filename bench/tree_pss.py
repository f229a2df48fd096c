"""Peak memory of a process and every process it started: the sum of their proportional set sizes (PSS,
``/proc/PID/smaps_rollup``; shared pages counted once in all), sampled every 20 ms until stdin closes.

    python bench/tree_pss.py PID    # prints "ready" after the first sample, then {"base_mb", "peak_mb"}

This sampler is left out of the sum.
"""

import json
import os
import select
import sys
from pathlib import Path

INTERVAL = 0.02


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # ended meanwhile
        pass
    return 0.0


def tree_mb(root: int) -> float:
    me = os.getpid()
    return sum(pss_mb(p) for p in descendants(root) if p != me)


def main() -> None:
    root = int(sys.argv[1])
    base = peak = tree_mb(root)
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], INTERVAL)
        peak = max(peak, tree_mb(root))
        if readable and not sys.stdin.readline():
            break
    print(json.dumps({"base_mb": base, "peak_mb": peak}), flush=True)


if __name__ == "__main__":
    main()
