"""Issue 17 item 4 benchmark: review tasks from the real IU chest X-ray reports (../shared/data/reports/
iu_reports_dev.csv, 1,122 reports) labelled by the rules labeler (CheXpert), one per mention (the baseline:
what findings_from_proposals made before) beside one per entity (mentions merged by
``annotation.findings.merge_target``, the rule findings_from_proposals applies), in the same run. Prints
how many tasks each makes, how many reports name an entity in both Findings and Impression, how many
merges were across sections or within one, and a sample of merged mentions to read.

    .venv/bin/python bench/bench_findings_merge.py [--reports N] [--sample 12]
"""

import argparse
import csv
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REPORTS = REPO.parent / "shared" / "data" / "reports" / "iu_reports_dev.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=0, help="first N reports (0: all)")
    parser.add_argument("--sample", type=int, default=12)
    args = parser.parse_args()
    if not REPORTS.exists():
        sys.exit(f"{REPORTS} is absent: this benchmark reads the real reports")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()  # model classes only: nothing is stored
    from annotation.findings import attributes_taken, merge_target
    from annotation.models import Finding
    from labeling.models import FindingProposal
    from labeling.rules import rules_label

    with open(REPORTS, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if args.reports:
        rows = rows[: args.reports]
    mentions = entities = both_sections = 0
    kinds: Counter = Counter()
    sample: list[str] = []
    started = time.perf_counter()
    for row in rows:
        sections = {k: row[k] for k in ("findings", "impression") if row.get(k)}
        found: list[tuple[Finding, set[str]]] = []
        for p in rules_label(sections, schema="chexpert"):
            if p.assertion != "present" or p.code == "No Finding":
                continue
            mentions += 1
            fp = FindingProposal(
                section=p.section, start=p.start, end=p.end, code=p.code, laterality=p.laterality,
                location=p.location, size_mm=p.size_mm, phrase=p.phrase,
            )  # fmt: skip
            target = merge_target(found, fp)
            if target is None:
                finding = Finding(
                    code=p.code, laterality=p.laterality, location=p.location, size_mm=p.size_mm,
                    text=sections[p.section][p.start : p.end],
                )  # fmt: skip
                found.append((finding, {p.section}))
                continue
            spans = next(s for f, s in found if f is target)
            kind = "across sections" if p.section not in spans else "within a section"
            kinds[kind] += 1
            if len(sample) < args.sample or kind == "within a section":
                sample.append(
                    f"[{p.code}, {kind}] {target.text!r} + {sections[p.section][p.start : p.end]!r}"
                )
            attributes_taken(target, fp)
            spans.add(p.section)
        entities += len(found)
        both_sections += sum(1 for _, s in found if {"findings", "impression"} <= s)
    seconds = time.perf_counter() - started
    print(f"{len(rows)} real IU reports, rules labeler (CheXpert), {seconds:.1f} s")
    print(f"review tasks, one per mention (baseline):  {mentions}")
    print(f"review tasks, one per entity (now):        {entities}  ({mentions - entities} fewer)")
    print(f"entities named in Findings and Impression: {both_sections}")
    print(f"merges: {dict(kinds)}")
    print("merged mentions (a sample, and every merge within a section):")
    for line in sample:
        print("  " + line)


if __name__ == "__main__":
    main()
