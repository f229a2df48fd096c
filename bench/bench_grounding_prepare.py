"""Grounding a report's sentences on one CT: the scan preprocessed once per sentence (before) against once
per scan, its input reused for every sentence (after: ``ml.engine.inference.prepare``, as evaluation
``ml.grounding_training.grounding_predictor`` and pre-annotation ``ml.model_regions`` now do), in the
same run.

The model: the untrained ``TextConditionedUNet`` with whole-volume position channels of
``tests/ml/grounding_toy.py`` (``PARENT_NETWORK``) on the input spec of the real-CT grounding test
(``REAL_SPEC``: window, resampling to 4 × 4 × 8 mm, 48 × 48 × 16 windows). The volume: a CT-sized
int16 volume (HU noise, default 512 × 512 × 200 at 0.7 × 0.7 × 1.5 mm, as a chest CT); random sentence
embeddings (the encoder's time is the same before and after). Masks are checked identical.

Run: ``.venv/bin/python bench/bench_grounding_prepare.py`` (``--shape X Y Z``, ``--sentences``,
``--repeats``). CPU, one torch thread; each figure is the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import django_setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 200])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.5])
    parser.add_argument("--native-shape", type=int, nargs=3, default=[160, 160, 64])
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    django_setup(Path(tempfile.mkdtemp(prefix="bench-prepare-")))  # tests.ml.grounding_toy imports Django
    import torch

    torch.set_num_threads(1)
    from ml.engine import inference
    from ml.engine.grounding import grounding_from_spec
    from ml.specs import InputSpec
    from tests.ml.grounding_toy import INPUT_SPEC, PARENT_NETWORK, REAL_SPEC

    torch.manual_seed(0)
    net = grounding_from_spec(PARENT_NETWORK).eval()
    texts = [torch.randn(384, generator=torch.Generator().manual_seed(s)) for s in range(args.sentences)]
    spent = {"seconds": 0.0, "calls": 0}
    real_prepare = inference.prepare

    def timed_prepare(*a, **k):  # the real prepare, timed (predict calls it when not given one)
        t = time.perf_counter()
        out = real_prepare(*a, **k)
        spent["seconds"] += time.perf_counter() - t
        spent["calls"] += 1
        return out

    inference.prepare = timed_prepare
    print(f"{args.sentences} sentences per scan; CPU, one torch thread; best of {args.repeats}\n")
    print("| input spec | volume → model grid | preprocessing | preprocess calls | preprocessing s | "
          "total s | vs before |\n|---|---|---|---|---|---|---|")  # fmt: skip
    configs = (
        ("REAL_SPEC (4×4×8 mm)", REAL_SPEC, args.shape, list(args.spacing)),
        ("INPUT_SPEC (native grid)", INPUT_SPEC, args.native_shape, [8.0, 8.0, 8.0]),
    )
    differ = []
    for name, raw_spec, shape, spacing in configs:
        rng = np.random.default_rng(0)
        volume = rng.normal(-700.0, 300.0, shape).clip(-1024, 3000).astype(np.int16)
        affine = np.diag([*spacing, 1.0])
        spec = InputSpec.from_dict(raw_spec)

        def before(volume=volume, spacing=spacing, spec=spec, affine=affine):
            return [
                inference.predict(net, volume, spacing, spec, ["finding"], text_embedding=t, affine=affine)
                for t in texts
            ]

        def after(volume=volume, spacing=spacing, spec=spec, affine=affine):
            prepared = inference.prepare(net, volume, spacing, spec, affine)
            return [
                inference.predict(net, None, spacing, spec, ["finding"], text_embedding=t, prepared=prepared)
                for t in texts
            ]

        best: dict[str, tuple[float, float, int]] = {}
        results = {}
        for _ in range(args.repeats):
            for label, run in (("before", before), ("after", after)):
                spent.update(seconds=0.0, calls=0)
                t = time.perf_counter()
                results[label] = run()
                total = time.perf_counter() - t
                if label not in best or total < best[label][0]:
                    best[label] = (total, spent["seconds"], spent["calls"])
        pairs = zip(results["before"], results["after"], strict=True)
        if not all(np.array_equal(a.label_map, b.label_map) for a, b in pairs):
            differ.append(name)
        grid = (
            shape
            if spec.spacing is None
            else [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, spec.spacing, strict=True)]
        )
        where = f"{'×'.join(map(str, shape))} → {'×'.join(map(str, grid))}"
        for label, what in (("before", "once per sentence (before)"), ("after", "once per scan (after)")):
            total, prep, calls = best[label]
            print(f"| {name} | {where} | {what} | {calls} | {prep:.2f} | {total:.2f} | "
                  f"{best['before'][0] / total:.2f}× |")  # fmt: skip
    print(f"\nmasks identical before and after: {not differ}")
    if differ:
        raise SystemExit(f"the masks differ: {differ}")


if __name__ == "__main__":
    main()
