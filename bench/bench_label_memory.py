"""Issue 16 item 2: peak memory of pre-annotation against the number of labels, beside plain MONAI.

A random-weight MONAI UNet (channels 16-32-64-128, strides 2, 1 residual unit) with 3, 14 and 100 output
channels pre-annotates a stored CT (the real Lung-PET-CT-Dx slices of ``../shared/data`` repeated to
``--slices`` slices, 512x512; the model's spacing 1.5x1.5x2 mm makes its grid ~8x smaller), each run in a
fresh process that measures its peak RSS (VmHWM, reset after imports and setup) and time:

(a) platform: ``ml.preannotate.preannotate`` end to end (read the stored scan, load the registered model,
    preprocess, sliding window, label map on the scan's grid, store one proposal per label);
(b) plain MONAI on the same stored NIfTI and network: ``LoadImaged``, ``EnsureChannelFirstd``,
    ``ScaleIntensityRanged``, ``Spacingd`` -> ``sliding_window_inference`` -> ``Activationsd(softmax)``,
    ``Invertd`` (every probability channel resampled back to the scan's grid) -> ``AsDiscreted(argmax)``
    -> the label map saved as gzipped NIfTI;
(c) the platform's code before this change (``--old-rev``, read with ``git show``): every channel
    resampled to the scan's grid, one bool mask per label, then stored.

Roi 96^3, sliding-window batch 2, overlap 0.25, Gaussian blending, CPU (``--device``). Each child may grow
its address space by at most ``--cap-gb`` (RLIMIT_AS above what it holds after imports), so a run that would
take more memory than this shared machine has stops with "over the cap" instead of swapping others out.

    .venv/bin/python bench/bench_label_memory.py                 # 512x512x150, 3/14/100 labels
    .venv/bin/python bench/bench_label_memory.py --slices 300    # --full: 512x512x300
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REAL_CT, REPO  # noqa: E402

SPACING = [1.5, 1.5, 2.0]
ROI = [96, 96, 96]
SW_BATCH = 2
OLD_REV = "c4d4513"  # main before issue 16 item 2


def network(channels: int) -> dict:
    return {
        "name": "UNet",
        "args": {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": channels,
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 1,
        },
    }


def names(channels: int) -> list[str]:
    return ["background"] + [f"organ_{c}" for c in range(1, channels)]


def spec() -> dict:
    return {"ndim": 3, "channels": 1, "roi_size": ROI, "spacing": SPACING, "window": [-1000, 400],
            "modality": ["CT"]}  # fmt: skip


# --- the parent: one database, scan and registered models; one child per (labels, mode) ---------------


def setup(work: Path, slices: int, labels: list[int]) -> dict:
    from bench.common import django_setup, make_series

    django_setup(work)
    import torch
    from monai.networks.nets import UNet

    from core.job_child import job_child_wait
    from core.services import project_create
    from ml.services import model_version_register
    from studies.models import Scan
    from studies.services.scans import scans_ingest

    project = project_create(slug="bench", name="bench")
    series = work / "series"
    if REAL_CT.is_dir():
        make_series(REAL_CT, series, slices=slices, spacing=1.0)
    else:  # no shared data: a synthetic chest CT of the same size
        from studies import demo

        volume, _ = demo.synthetic_chest_ct(shape=(slices, 512, 512), spacing=(1.0, 0.7, 0.7))
        demo.write_ct_series(series, volume, (1.0, 0.7, 0.7))
    summary = scans_ingest(project=project, paths=[series], workers=1)
    assert not summary.errors, summary.errors
    scan = Scan.objects.get(project=project)
    models = {}
    for c in labels:
        torch.manual_seed(c)
        weights = work / f"unet{c}.pt"
        torch.save(UNet(**network(c)["args"]).state_dict(), weights)
        version = model_version_register(
            project=project, path=weights, fmt="state-dict", name=f"labels{c}", input_spec=spec(),
            label_names=names(c), network=network(c),
        )  # fmt: skip
        version.refresh_from_db()
        job_child_wait(version.job_id)  # the validation job runs in a child process (core.job_child)
        version.refresh_from_db()
        assert version.status == "ready", version.error
        models[c] = str(weights)
    from django.conf import settings

    return {
        "scan": scan.pk,
        "shape": list(scan.shape),
        "spacing": [float(s) for s in scan.spacing],
        "nifti": str(Path(settings.MEDIA_ROOT) / scan.file.name),
        "weights": models,
    }


def run_child(mode: str, labels: int, info: dict, args, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--child-labels", str(labels), "--info",
           json.dumps(info), "--device", args.device, "--cap-gb", str(args.cap_gb), "--old-rev",
           args.old_rev]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        killed = done.returncode < 0 and f"killed by signal {-done.returncode}"
        return {"error": killed or " / ".join(tail) or f"exit {done.returncode}"}
    return json.loads(lines[-1])


# --- a child: one measured run --------------------------------------------------------------------------


def _status(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cap(gb: float) -> None:
    import resource

    limit = int((_status("VmSize") + gb * 1024) * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _django_child() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def _old_modules(rev: str):
    """The platform's inference and pre-annotation modules at ``rev``, the old inference module installed
    as ``ml.engine.inference`` (the old ``_model_regions`` imports ``predict`` from there)."""
    import importlib.util

    out = {}
    for name, path in (
        ("ml.engine.inference", "ml/engine/inference.py"),
        ("ml.preannotate", "ml/preannotate.py"),
    ):
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
        spec_ = importlib.util.spec_from_loader(name, loader=None)
        module = importlib.util.module_from_spec(spec_)
        module.__file__ = f"{rev}:{path}"
        sys.modules[name] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)  # our own code at an older commit
        out[name] = module
    return out


def _plain_monai(info: dict, labels: int, device: str, out_dir: Path) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    from bench.plain_monai import plain_monai_transforms

    model = UNet(**network(labels)["args"])
    model.load_state_dict(torch.load(info["weights"][str(labels)], map_location=device, weights_only=True))
    model = model.to(device).eval()
    pre, post = plain_monai_transforms(spec()["window"], SPACING)
    data = pre({"image": info["nifti"]})
    grid = list(data["image"].shape[1:])
    with torch.no_grad():
        data["pred"] = sliding_window_inference(data["image"][None].to(device), ROI, SW_BATCH, model,
                                                overlap=0.25, mode="gaussian")[0]  # fmt: skip
    data = post(data)
    label_map = data["pred"][0].cpu().numpy().astype(np.uint8)
    nib.save(nib.Nifti1Image(label_map, np.asarray(data["pred"].affine)), out_dir / "labels.nii.gz")
    return {"model_grid": grid, "scan_grid": list(label_map.shape), "labels": int(len(np.unique(label_map)))}


def child(args) -> None:
    info = json.loads(args.info)
    labels, mode = args.child_labels, args.child
    import gc

    import torch  # noqa: F401  (imported before the start figure, as the platform's worker has it)

    if mode != "monai":
        _django_child()
        from ml.preannotate import preannotate
        from studies.models import Scan

        if mode == "old":
            preannotate = _old_modules(args.old_rev)["ml.preannotate"].preannotate
        scan = Scan.objects.get(pk=info["scan"])
    import monai.transforms  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        _cap(args.cap_gb)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS
        start = _status("VmRSS")
        t0 = time.perf_counter()
        try:
            if mode == "monai":
                extra = _plain_monai(info, labels, args.device, Path(tmp))
            else:
                outcome = preannotate(scan=scan, generator=f"model:labels{labels}",
                                      params={"device": args.device, "sw_batch_size": SW_BATCH})  # fmt: skip
                extra = {"labels": len(outcome.proposals)}
        except (MemoryError, RuntimeError) as exc:
            chain, e = [], exc  # MONAI wraps a transform's error: look down the chain
            while e is not None:
                chain.append(e)
                e = e.__cause__ or e.__context__
            if not any(isinstance(e, MemoryError) or "alloc" in str(e) for e in chain):
                raise
            print(json.dumps({"error": f"over the {args.cap_gb:g} GB cap", "start_mb": start}))
            return
        seconds = time.perf_counter() - t0
    print(json.dumps({"peak_mb": _status("VmHWM") - start, "hwm_mb": _status("VmHWM"), "start_mb": start,
                      "seconds": seconds, **extra}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, nargs="+", default=[3, 14, 100])
    parser.add_argument("--slices", type=int, default=150, help="the scan's Z (512x512xZ); 300 with --full")
    parser.add_argument("--full", action="store_true", help="512x512x300")
    parser.add_argument("--modes", nargs="+", default=["platform", "monai", "old"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cap-gb", type=float, default=12.0, help="address-space growth a child may take")
    parser.add_argument("--old-rev", default=OLD_REV)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--work", type=Path, help="keep the database, scan and models here (reused)")
    parser.add_argument("--child", choices=["platform", "monai", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--info", help=argparse.SUPPRESS)
    parser.add_argument("--child-labels", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    slices = 300 if args.full else args.slices
    with tempfile.TemporaryDirectory(prefix="bench-labelmem-") as tmp:
        work = args.work or Path(tmp) / "work"
        t0 = time.perf_counter()
        saved = work / f"info-{slices}.json"
        if saved.exists() and all(str(c) in json.loads(saved.read_text())["weights"] for c in args.labels):
            info = json.loads(saved.read_text())  # --work again: the same database, scan and models
            os.environ.update(
                DATABASE_URL=f"sqlite:///{work / 'bench.sqlite3'}", MEDIA_ROOT=str(work / "media")
            )
        else:
            info = setup(work, slices, args.labels)
            saved.write_text(json.dumps(info))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        print(f"setup {time.perf_counter() - t0:.0f} s; scan {info['shape']} at {info['spacing']} mm; model "
              f"spacing {SPACING} mm; UNet 16-128; roi 96^3, sw batch {SW_BATCH}; device {args.device}; each "
              f"run in a fresh process, peak RSS over its start (after imports); cap {args.cap_gb:g} GB",
              flush=True)  # fmt: skip
        rows = []
        for labels in args.labels:
            row = {"labels": labels}
            for mode in args.modes:
                row[mode] = run_child(mode, labels, info, args, env)
                r = row[mode]
                shown = f"{r['peak_mb']:.0f} MB in {r['seconds']:.1f} s" if "peak_mb" in r else r["error"]
                print(f"  {labels} labels, {mode}: {shown} {json.dumps(r)}", flush=True)
            rows.append(row)

    def cell(r: dict) -> str:
        return f"{r['peak_mb']:,.0f} MB ({r['seconds']:.0f} s)" if "peak_mb" in r else r.get("error", "-")

    print(f"\n512x512x{slices} scan, peak RSS growth of one pre-annotation (time)")
    print("| labels | " + " | ".join(args.modes) + " | platform / plain MONAI |")
    print("|---|" + "---|" * (len(args.modes) + 1))
    for row in rows:
        p, m = row.get("platform", {}), row.get("monai", {})
        ratio = f"{p['peak_mb'] / m['peak_mb']:.2f}x" if "peak_mb" in p and "peak_mb" in m else "-"
        print(f"| {row['labels']} | " + " | ".join(cell(row[k]) for k in args.modes) + f" | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"slices": slices, "info": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
