"""Grounding metrics (ReXGroundingCT: mean Dice, hit rate, instance and distance P/R/F1) of a text-conditioned
model trained in the platform, beside the untrained model it started from, measured in the same run.

1. Toy: synthetic CTs (real DICOM, ingested) with two identical nodules that only the sentence and the
   position tell apart ("right upper lobe" / "left lower lobe", ``tests/ml/grounding_toy.py``); accepted
   findings through the review services, a frozen release, a training run from the accepted (sentence,
   mask) pairs (``ml.training``), evaluated on the release's validation split (patients never trained on).
   Also: Dice of each sentence's mask against the *other* nodule (0 = separated by text and position).
2. Real CT: the release of lungdx-a0002 (``tests/releases/real.py``, accepted masks on its mass and
   effusion); the untrained model trained on its two (sentence, mask) pairs and evaluated on the same case.
   One real CT exists: this measures fitting real anatomy from two sentences, not generalisation.

Run: ``.venv/bin/python bench/bench_grounding.py`` (``--toy-steps``, ``--real-steps``, ``--patients``).
Django on a throw-away SQLite database (``bench/common.py``), the CPU, one torch thread.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import SHARED, django_setup


def row(name: str, g: dict) -> str:
    i, d = g["instance"], g["distance"]
    return (
        f"| {name} | {g['findings']} | {g['dice_mean']:.3f} | {g['hit_rate']:.2f} | {i['precision']:.2f} / "
        f"{i['recall']:.2f} / {i['f1']:.2f} | {d['precision']:.2f} / {d['recall']:.2f} / {d['f1']:.2f} |"
    )


HEAD = (
    "| model | findings | mean Dice | hit rate | instance P / R / F1 | distance P / R / F1 |\n"
    "|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--toy-steps", type=int, default=200)
    parser.add_argument("--real-steps", type=int, default=40)
    parser.add_argument("--patients", type=int, default=8)
    args = parser.parse_args()
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[key] = "1"
    work = Path(tempfile.mkdtemp(prefix="bench-grounding-"))
    django_setup(work)
    import torch

    torch.set_num_threads(1)
    from core.services import user_create

    counter = {"n": 0}

    def make_user(username=None, **kwargs):
        counter["n"] += 1
        return user_create(username=username or f"u{counter['n']}", password="pw-" + "x" * 12, **kwargs)

    from annotation.training import accepted_examples
    from ml.grounding_training import grounding_predictor
    from ml.training import training_run_create, training_run_execute
    from releases.evaluation import release_cases
    from releases.metrics import dice
    from tests.ml.grounding_toy import LEFT_LOWER, RIGHT_UPPER, real_ct_grounding, toy_project
    from tests.releases.real import real_release

    # 1. toy
    t0 = time.perf_counter()
    toy = toy_project(work / "toy", make_user, patients=args.patients)
    built = time.perf_counter() - t0
    params = {"steps": args.toy_steps, "batch_size": 4, "learning_rate": 0.005, "checkpoint_every": 100,
              "foreground_fraction": 0.6}  # fmt: skip
    run = training_run_create(
        parent=toy.parent, examples=accepted_examples(toy.project, toy.findings, None), params=params
    )
    t1 = time.perf_counter()
    run = training_run_execute(run=run, device="cpu")
    trained = time.perf_counter() - t1
    m = run.metrics
    n_train, n_val = len(run.split["train"]), len(run.split["val"])
    print(
        f"## Toy: {args.patients} synthetic CTs (32x32x16, 8 mm), {n_train} train / {n_val} validation "
        f"scans ({m['evaluation']}), {args.toy_steps} steps x 4 patches"
    )
    print(f"(project built in {built:.0f} s; training + both evaluations {trained:.0f} s)\n")
    print(HEAD)
    print(row("untrained parent (same weights the run started from)", m["parent_grounding"]))
    print(
        row(f"trained: {run.result.name} v{run.result.version}" if run.result else "trained", m["grounding"])
    )
    from core.storage import storage_local_copy
    from ml.engine.loading import load_model

    version = run.result or run.parent
    separation = {}
    for label, v in (("untrained", run.parent), ("trained", version)):
        with storage_local_copy(v.weights.name) as local:
            model = load_model(local, v.format, network=v.network)
        predict = grounding_predictor(model, v, device="cpu")
        own, other = [], []
        for case in release_cases(toy.release, "val"):
            by_text = {f.text: f.mask for f in case.findings}
            for f, mask in zip(case.findings, predict(case), strict=True):
                wrong = by_text[LEFT_LOWER if f.text == RIGHT_UPPER else RIGHT_UPPER]
                own.append(dice(mask, f.mask) if mask is not None else 0.0)
                other.append(dice(mask, wrong) if mask is not None else 0.0)
        separation[label] = (sum(own) / len(own), sum(other) / len(other))
    print("\n| model | Dice with its own nodule | Dice with the other nodule |\n|---|---|---|")
    for label, (own, other) in separation.items():
        print(f"| {label} | {own:.3f} | {other:.3f} |")

    # 2. real CT
    real = real_release(SHARED, work / "real", make_user, slug="bench-real")
    out = real_ct_grounding(real, work, steps=args.real_steps)
    print(f"\n## Real CT lungdx-a0002 (release split {out['split']}): {args.real_steps} steps x 2 patches "
          f"in {out['seconds']:.0f} s; sentences: {out['texts']}\n")  # fmt: skip
    print(HEAD)
    print(row("untrained (same weights before training)", out["before"]))
    print(row("trained on its two (sentence, mask) pairs", out["after"]))
    for label in ("before", "after"):
        print(f"{label}: per finding Dice {out[label]['per_case']}")
    print(f"voxels (true, predicted) after training: {out['voxels_true_predicted']}")


if __name__ == "__main__":
    main()
