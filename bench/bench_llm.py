"""Benchmark of the ``llm`` labeler: throughput against a loopback chat-completions server that takes a
fixed time per reply, at several concurrencies, and the platform's own time per report.

    .venv/bin/python bench/bench_llm.py [--reports 960] [--delay 0.2] [--server async|threads]

The server (tests/labeling/llm_server.py, ``AsyncLLMServer`` unless ``--server threads``) runs in its own
process, like a real endpoint; it answers each report with its first sentence as one finding, so every reply
is parsed, validated and located. Each level starts with an empty reply cache (the path of a first run:
cache read, request, cache write). Reports are distinct (a repeated report would be a cache hit, not a
request). Level c labels min(--reports, max(64, 32 c)) reports: 32 rounds of c requests, so that starting
up and the last partial round weigh little (``--reports 256`` gives the earlier, shorter runs).
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, REPO, SHARED, django_setup  # noqa: E402

CSV = SHARED / "reports" / "iu_reports_dev.csv"


def load_reports(n: int) -> list[dict[str, str]]:
    """The first ``n`` distinct reports with text."""
    out, seen = [], set()
    with open(CSV, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            sections = {k: (row.get(k) or "").strip() for k in ("findings", "impression")}
            sections = {k: v for k, v in sections.items() if v}
            key = tuple(sections.items())
            if sections and key not in seen:
                seen.add(key)
                out.append(sections)
            if len(out) == n:
                break
    return out


class Server:
    def __init__(self, delay: float, kind: str = "async"):
        script = str(REPO / "tests" / "labeling" / "llm_server.py")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--delay", str(delay)] + (["--threads"] if kind == "threads" else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def run_level(base_url: str, reports: list[dict], concurrency: int, *, cache: bool = True) -> dict:
    from labeling.llm import LLMLabeler, label_many
    from labeling.llm.endpoints import Endpoint
    from labeling.models import LLMCacheEntry

    if cache:
        LLMCacheEntry.objects.all().delete()
    labeler = LLMLabeler(  # the endpoint given in code: a run's params never carry a URL
        {"model": "bench", "concurrency": concurrency, "cache": cache, "timeout": 30},
        endpoint=Endpoint(name="bench", base_url=base_url),
    )
    label_many(labeler, reports[:concurrency], schema="chexpert", concurrency=concurrency)  # connections up
    if cache:
        LLMCacheEntry.objects.all().delete()
    cpu0, t0 = time.process_time(), time.perf_counter()
    outcomes = label_many(labeler, reports, schema="chexpert")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    failed = [o for o in outcomes if isinstance(o, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} reports failed, first: {failed[0]}")
    proposals = sum(len(o.proposals) for o in outcomes)
    return {"reports": len(reports), "wall_s": wall, "cpu_s": cpu, "proposals": proposals, "labeler": labeler}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=960)
    parser.add_argument("--server", choices=["async", "threads"], default="async")
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    if not CSV.is_file():
        print(f"skipped: {CSV} is absent")
        return
    django_setup(OUT / "llm")
    reports = load_reports(args.reports)
    rows = []
    server = Server(args.delay, args.server)
    try:
        for c in args.concurrency:
            n = min(len(reports), max(64, 32 * c))
            r = run_level(server.base_url, reports[:n], c)
            ideal = c / args.delay
            achieved = r["reports"] / r["wall_s"]
            rows.append(
                {
                    "concurrency": c,
                    "reports": r["reports"],
                    "wall_s": round(r["wall_s"], 3),
                    "achieved_per_s": round(achieved, 2),
                    "ideal_per_s": round(ideal, 2),
                    "ratio": round(achieved / ideal, 3),
                    "client_cpu_ms_per_report": round(1000 * r["cpu_s"] / r["reports"], 2),
                    "proposals": r["proposals"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        # a re-run: every reply comes from the cache
        rerun = reports[:256]
        r = run_level(server.base_url, rerun, 8, cache=True)
        from labeling.llm import label_many

        t0 = time.perf_counter()
        label_many(r["labeler"], rerun, schema="chexpert")
        cached_ms = 1000 * (time.perf_counter() - t0) / len(rerun)
    finally:
        server.stop()
    zero = Server(0.0, args.server)
    try:
        r0 = run_level(zero.base_url, reports[:256], 1, cache=True)
        r0_nocache = run_level(zero.base_url, reports[:256], 1, cache=False)
    finally:
        zero.stop()
    own = {
        "zero_delay_ms_per_report": round(1000 * r0["wall_s"] / r0["reports"], 2),
        "zero_delay_cpu_ms_per_report": round(1000 * r0["cpu_s"] / r0["reports"], 2),
        "zero_delay_nocache_ms_per_report": round(1000 * r0_nocache["wall_s"] / r0_nocache["reports"], 2),
        "cached_rerun_ms_per_report": round(cached_ms, 2),
    }
    print(json.dumps(own))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_llm.json").write_text(
        json.dumps({"levels": rows, "own": own, "delay_s": args.delay, "server": args.server}, indent=2)
    )
    print()
    print("| concurrency | reports | seconds | reports/s | ideal | ratio | client CPU ms/report |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['concurrency']} | {row['reports']} | {row['wall_s']:.2f} | "
            f"{row['achieved_per_s']:.2f} | {row['ideal_per_s']:.0f} | **{row['ratio']:.3f}** | "
            f"{row['client_cpu_ms_per_report']:.2f} |"
        )
    print()
    print(json.dumps(own))


if __name__ == "__main__":
    main()
