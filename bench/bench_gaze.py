"""Issue 4 benchmark: reflacx gaze heatmap of 1,000 fixations on a 3056x2544 radiograph, one core, against
the naive computation (a full-image float64 Gaussian summed per fixation) in the same run."""

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labeling.gaze import heatmap  # noqa: E402

W, H, N = 3056, 2544, 1000


def recording(seed: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.1, 0.5, N))
    return {
        "start": t.tolist(),
        "end": (t + rng.uniform(0.05, 0.6, N)).tolist(),
        "x": rng.integers(0, W, N).tolist(),  # REFLACX positions are integers
        "y": rng.integers(0, H, N).tolist(),
        "ang_res_x": rng.choice([88.0, 94.0], N).tolist(),
        "ang_res_y": rng.choice([88.0, 94.0], N).tolist(),
        "shown_rect": [[0, 303, 2521, 2463]] * N,
    }


def naive(fx: dict) -> np.ndarray:
    cols, rows = np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)
    out = np.zeros((H, W))
    for i in range(N):
        sx, sy = fx["ang_res_x"][i], fx["ang_res_y"][i]
        x0, y0, x1, y1 = (round(v) for v in fx["shown_rect"][i])
        gx = np.exp(-0.5 * ((cols - fx["x"][i]) / sx) ** 2)
        gy = np.exp(-0.5 * ((rows - fx["y"][i]) / sy) ** 2)
        g = gy[:, None] * gx[None, :]
        w = (fx["end"][i] - fx["start"][i]) / (2 * np.pi * sx * sy)
        out[y0:y1, x0:x1] += w * g[y0:y1, x0:x1]
    return out / out.sum()


def main() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    fx = recording()
    heatmap(fx, width=W, height=H)  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        got = heatmap(fx, width=W, height=H)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = naive(fx)
    t_naive = time.perf_counter() - t0
    live = ref >= np.finfo(np.float32).tiny
    rel = float((np.abs(got[live].astype(np.float64) - ref[live]) / ref[live]).max())
    dead_ok = bool(np.all(np.abs(got[~live]) <= np.finfo(np.float32).tiny))
    best, median = min(times), sorted(times)[len(times) // 2]
    print(f"cpu {os.sched_getaffinity(0)}  image {W}x{H}  fixations {N}  method reflacx")
    print(f"platform: best {best * 1000:.1f} ms, median {median * 1000:.1f} ms (target < 150 ms)")
    print(f"naive:    {t_naive * 1000:.1f} ms")
    print(f"speed-up: {t_naive / median:.1f}x on the median (target >= 20x)")
    print(
        f"max relative difference: {rel:.2e} on {int(live.sum())} px (target <= 1e-5); rest zero: {dead_ok}"
    )


if __name__ == "__main__":
    main()
