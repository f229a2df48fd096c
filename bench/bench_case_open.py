"""Issue 6 benchmark: opening a 512x512x300 CT case on the review screen in Chromium, from pressing "Next
case" to the first slice on screen (the page's ``case-preview`` mark: the server's PNG of the middle axial
slice, decoded and shown while the volume loads) and to the volume and mask drawn by NiiVue
(``case-rendered``, two animation frames after both are loaded). Target: < 3 s on loopback.

Set-up: a throw-away SQLite database and media folder; a synthetic chest CT ingested through the platform
(DICOM series -> ``scans_ingest``), a report, a rules label run, a lung proposal (``preannotate`` generator
``lungs``, its code set to the finding's) so version 1 of the finding is a mask, and
``findings_from_proposals`` for the task; the same for a 64x64x16 CT in a second project. Served by
``manage.py runserver --noreload`` (DEBUG, static files by runserver) on a free loopback port; Chromium
headless with ``--disable-gpu`` (WebGL2 on SwiftShader, i.e. on the CPU). Each open is a page reload and
"Next case" (the annotator gets their held task back). Baseline in the same run: ``GET
/api/scans/<id>/nifti/`` with ``requests`` (pure transfer, token auth).

    .venv/bin/python bench/bench_case_open.py [--repeats 3] [--gzip]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO, django_setup  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "pw-" + "x" * 12
TIMEOUT_MS = 180_000
BIG = ((300, 512, 512), (1.0, 0.7, 0.7))  # (Z, Y, X) voxels, spacing mm
SMALL = ((16, 64, 64), (5.0, 6.0, 6.0))

# In the page, after "Next case": the phases from the Resource Timing entries of the case's requests.
PHASES_JS = """() => {
  const t0 = window.benchClick;
  const mark = performance.getEntriesByName("case-rendered")[0];
  const preview = performance.getEntriesByName("case-preview").find((e) => e.startTime >= t0);
  const res = performance.getEntriesByType("resource").filter((e) => e.startTime >= t0);
  const one = (part) => res.find((e) => e.name.includes(part));
  const at = (e) => (e ? e.responseEnd - t0 : null);
  const nifti = one("/nifti/");
  return {
    rendered: mark.startTime - t0,
    preview: preview ? preview.startTime - t0 : null,
    next_task: at(one("/next-task/")),
    nifti_start: nifti ? nifti.requestStart - t0 : null,
    nifti_end: at(nifti),
    nifti_bytes: nifti ? nifti.encodedBodySize : null,
    mask_end: at(one("/mask/")),
    mask_bytes: one("/mask/") ? one("/mask/").encodedBodySize : null,
  };
}"""


# Time NiiVue's own steps: wrap the viewer's methods that the review screen calls (and the ones they call),
# summing the time of the outermost call of each (nested calls are inside their caller's time).
STEPS = ["addVolume", "loadDrawing", "createEmptyDrawing", "setDrawOpacity", "setDrawingEnabled"]
STEPS += ["updateGLVolume", "refreshDrawing", "drawScene", "refreshLayers", "vox2frac"]
WRAP_JS = """(names) => {
  const nv = window.groundlabReview.nv;
  window.benchSteps = {};
  let depth = 0;
  for (const name of names) {
    const original = nv[name].bind(nv);
    nv[name] = (...args) => {
      const t = performance.now();
      depth++;
      try { return original(...args); } finally {
        depth--;
        const step = (window.benchSteps[name] ??= { outer: 0, calls: 0, first: t - window.benchClick });
        step.calls++;
        step.last = performance.now() - window.benchClick;
        if (depth === 0) step.outer += performance.now() - t;
      }
    };
  }
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_case(slug: str, shape, spacing, user, workdir: Path, *, proposal: bool):
    """A project with ``user`` as annotator, a CT ingested from a DICOM series, a report of one finding,
    and its review task (version 1 the right-lung proposal when ``proposal``). Returns (scan, seconds)."""
    from annotation.models import Finding
    from annotation.services import findings_from_proposals
    from core.models import Role
    from core.services import membership_set, project_create
    from labeling.models import FindingProposal, RegionProposal
    from labeling.services import label_run_execute, label_run_get_or_create
    from ml.preannotate import preannotate
    from studies import demo
    from studies.models import Report, Scan
    from studies.services.scans import scans_ingest

    t0 = time.perf_counter()
    project = project_create(slug=slug, name=slug)
    project.label_schema = "rexgroundingct"
    project.qa_sample_rate = 0.0
    project.save()
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    volume, _ = demo.synthetic_chest_ct(shape=shape, spacing=spacing)
    demo.write_ct_series(workdir / slug, volume, spacing, patient_id=f"BENCH-{slug}")
    outcome = scans_ingest(project=project, paths=[workdir / slug], workers=1)
    assert not outcome.errors, outcome.errors
    scan = Scan.objects.get(project=project)
    Report.objects.create(
        project=project,
        study=scan.study,
        external_id="r",
        source="text",
        raw_text="x",
        checksum="1",
        findings="No consolidation. There is a 14 mm nodule in the right upper lobe.",
    )
    run = label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    if proposal:
        code = FindingProposal.objects.get(run__project=project, assertion="present").code
        preannotate(scan=scan, generator="lungs")
        RegionProposal.objects.filter(scan=scan, label="right_lung").update(code=code)
    assert findings_from_proposals(project=project, run=run) == 1
    finding = Finding.objects.get(project=project)
    assert finding.current_version == (1 if proposal else 0), finding.current_version
    return scan, time.perf_counter() - t0


@contextmanager
def runserver(workdir: Path):
    """``manage.py runserver`` (DEBUG, no reload) on a free loopback port, its log in ``workdir``: yields
    its base URL once the login page answers; stopped on leaving."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(workdir / "runserver.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=REPO,
            env={**os.environ, "DEBUG": "true"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_up(f"{base}/review/login/", server)
            yield base
        finally:
            server.terminate()
            server.wait(timeout=10)


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import requests

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"runserver exited with {proc.returncode}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def open_once(context, base: str, slug: str) -> dict:
    """A fresh page on the review screen (logged-in context), "Next case", wait for the rendered mark."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/review/{slug}/")
    page.wait_for_selector("#review[data-state=idle]")
    page.evaluate(WRAP_JS, STEPS)
    page.evaluate(
        "() => document.querySelector('button[data-action=next]').addEventListener("
        "'click', () => { window.benchClick = performance.now(); }, { capture: true, once: true })"
    )
    t0 = time.perf_counter()
    page.click("button[data-action=next]")
    page.wait_for_function(
        "() => performance.getEntriesByName('case-rendered').length > 0", polling=10, timeout=TIMEOUT_MS
    )
    wall = time.perf_counter() - t0
    out = page.evaluate(PHASES_JS)
    out["wall"] = wall * 1000
    out["steps"] = page.evaluate("() => window.benchSteps")
    out["message"] = page.get_attribute("#review", "data-message")
    out["voxels"] = page.get_attribute("#review", "data-mask-voxels")
    if errors or out["message"] == "error":
        raise RuntimeError(f"page errors: {errors} / {page.inner_text('#messages')}")
    page.close()
    return out


def ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.median(values):.0f} / {min(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gzip", action="store_true", help="store canonical NIfTI as .nii.gz")
    args = parser.parse_args()
    if args.gzip:
        os.environ["CANONICAL_NIFTI_GZIP"] = "true"
    with tempfile.TemporaryDirectory(prefix="bench-open-") as tmp:
        workdir = Path(tmp)
        django_setup(workdir)
        import requests
        from knox.models import AuthToken

        from core.services import user_create

        user = user_create(username="ann", password=PASSWORD)
        token = AuthToken.objects.create(user=user)[1]
        big, big_s = make_case("big", *BIG, user, workdir, proposal=True)
        small, small_s = make_case("small", *SMALL, user, workdir, proposal=False)
        nifti_size = (Path(os.environ["MEDIA_ROOT"]) / big.file.name).stat().st_size
        print(f"set-up: big case {big_s:.1f} s, small case {small_s:.1f} s; scan file {big.file.name}")

        with runserver(workdir) as base:
            # Baseline: the scan file over loopback with requests, nothing else.
            transfer = []
            session = requests.Session()
            session.headers["Authorization"] = f"Token {token}"
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                response = session.get(f"{base}/api/scans/{big.pk}/nifti/")
                body = response.content
                transfer.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200 and len(body) == nifti_size, response.status_code

            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"{base}/review/login/")
                page.fill("#id_username", "ann")
                page.fill("#id_password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_load_state()
                renderer = page.evaluate(
                    "() => { const gl = document.createElement('canvas').getContext('webgl2');"
                    " const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');"
                    " return gl ? (ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : 'webgl2') : 'none'; }"
                )
                page.close()
                runs = {"big": [], "small": []}
                for _ in range(args.repeats):
                    for slug in runs:
                        runs[slug].append(open_once(context, base, slug))
                browser.close()

        big_runs, small_runs = runs["big"], runs["small"]
        print(
            f"WebGL renderer: {renderer}; big scan {BIG[0][2]}x{BIG[0][1]}x{BIG[0][0]} int16, "
            f"NIfTI {nifti_size / 1e6:.1f} MB on disk ({'gzip' if args.gzip else 'uncompressed'}), "
            f"{big_runs[0]['nifti_bytes'] / 1e6:.1f} MB over the wire; v1 mask "
            f"{(big_runs[0]['mask_bytes'] or 0) / 1e6:.2f} MB, {big_runs[0]['voxels']} voxels; "
            f"{args.repeats} opens each"
        )
        print("| ms from the click (median / best) | 512x512x300 + mask | 64x64x16 | target |")
        print("|---|---|---|---|")
        rows = [
            ("next-task answered", "next_task", ""),
            ("scan NIfTI request sent", "nifti_start", ""),
            ("scan NIfTI received", "nifti_end", ""),
            ("mask received", "mask_end", ""),
            ("**first slice on screen** (server PNG preview decoded; page mark)", "preview", "< 3000"),
            ("volume and mask rendered in NiiVue (page mark)", "rendered", ""),
            ("same, Playwright wall clock", "wall", ""),
        ]
        for name, key, target in rows:
            big_ms, small_ms = ms(r[key] for r in big_runs), ms(r[key] for r in small_runs)
            print(f"| {name} | {big_ms} | {small_ms} | {target} |")
        nifti_dl = [r["nifti_end"] - r["nifti_start"] for r in big_runs]
        print(f"| scan NIfTI download in the browser (Resource Timing) | {ms(nifti_dl)} | | |")
        print(f"| baseline: GET the scan NIfTI with requests | {ms(transfer)} | | |")
        for name in STEPS:
            outer = [r["steps"].get(name, {}).get("outer", 0) for r in big_runs]
            calls = big_runs[0]["steps"].get(name, {}).get("calls", 0)
            if calls:
                small_outer = ms(r["steps"].get(name, {}).get("outer", 0) for r in small_runs)
                print(f"| NiiVue `{name}` ({calls} calls, outermost time) | {ms(outer)} | {small_outer} | |")

        def step(r, name, key):
            return r["steps"].get(name, {}).get(key, 0)

        parse = ms(step(r, "addVolume", "first") - r["nifti_end"] for r in big_runs)
        print(f"| scan NIfTI received → `addVolume` called (NVImage parse) | {parse} | | |")
        if all(step(r, "loadDrawing", "calls") for r in big_runs):  # the NIfTI path; runs fill the drawing
            parse = ms(step(r, "loadDrawing", "first") - r["mask_end"] for r in big_runs)
            print(f"| mask received → `loadDrawing` called (mask parse) | {parse} | | |")
        js_end = [max(v["last"] for v in r["steps"].values()) for r in big_runs]
        print(f"| last NiiVue call returned (JS done) | {ms(js_end)} | | |")
        after = ms(r["rendered"] - end for r, end in zip(big_runs, js_end, strict=True))
        print(f"| JS done → frame on screen (GPU process, SwiftShader) | {after} | | |")
        tail = ms(r["rendered"] - r["mask_end"] for r in big_runs)
        print(f"| after the mask arrived: parse, upload, render | {tail} | | |")


if __name__ == "__main__":
    main()
