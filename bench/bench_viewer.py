"""Issue 17 item 3 benchmark: a large CT on the review screen against plain NiiVue, in the same browser and
the same run. Time to interactive (the case editable: volume and mask drawn) of the review screen vs a bare
page that loads the same NIfTI with NiiVue and nothing else, and the latency of a pen stroke on both.

Set-up: a throw-away SQLite database and media folder; a synthetic chest CT of 512x512xZ (``--slices``,
default 255; spacing 0.7 x 0.7 x 1.0 mm) ingested from a DICOM series, a report, a rules label run and the
``lungs`` generator's right-lung proposal as version 1 of the finding (a mask of millions of voxels), as in
bench_case_open.py. Served by ``manage.py runserver --noreload`` (DEBUG) on loopback. Chromium headless
``--no-sandbox --disable-gpu --disable-background-networking`` (WebGL2 on SwiftShader: on the CPU),
1920x1080. One logged-in browser context; each open is a new page.

- review screen: "Next case" clicked → the page's ``case-rendered`` mark (two animation frames after the
  scan and the mask are loaded into NiiVue and the drawing is editable).
- plain NiiVue (baseline): a bare page (served by Playwright on the same origin, the same session) with
  NiiVue's UMD bundle from node_modules: ``loadVolumes([{url: /api/scans/<id>/nifti/}])`` called → two
  animation frames after it resolved.
- stroke (on the review screen after the finding's anatomy layers have loaded): pen mode, 12 mouse
  moves across the axial tile, then release. Per move: the event's time stamp → the second animation frame
  after it (the painted frame: the screen paints the stroke into NiiVue's WebGL drawing and draws it in
  the first frame; the second frame's callbacks run once that frame has gone to the screen); the stroke's
  end: mouse up → two frames after the screen recorded it (undo
  step, voxel count). The same stroke on the bare page (NiiVue's pen, its empty drawing) is the baseline.
  NiiVue's methods in the stroke are timed too (main-thread time; the frames themselves are drawn by
  SwiftShader in the GPU process).

Where the review screen's time goes: the screen's own performance measures ``case:<step>`` (images.ts; main
thread, ms): ``scan-fetch`` (request → body), ``scan-parse`` (NVImage), ``add-volume`` (NiiVue's addVolume:
the volume's textures), ``layout``, ``mask-fetch`` (the mask's request → decoded, beside the scan's),
``mask-wait`` (how long the screen then waited for it), ``mask-runs-to-drawing`` (runs → NiiVue's drawing
and its upload) or ``mask-nifti-to-drawing`` (the NIfTI fallback: parse and ``loadDrawing``),
``drawing-reset`` (undo history), ``centroid`` (the screen's own count of the drawing, 0 when the server
sent it), ``draw`` (the load's one draw); "then two frames → interactive": from that draw to the
``case-rendered`` mark. The main-thread figures overlap with the GPU process's work (SwiftShader renders
and copies textures there; a step that waits on it, e.g. ``mask-wait`` behind the first frame's
``refreshLayers``, shows that time). For both pages the load's GL work is counted (voxels sent to 3D
textures, texture uploads, draw calls) with the NiiVue calls that redo textures or frames
(``updateGLVolume``, ``refreshLayers``, ``refreshColormaps``, ``refreshDrawing``, ``drawScene``
requested, ``setSliceType``), from the click (or ``loadVolumes``) to interactive; and how the mask arrived
(``data-mask-path``: ``runs`` or ``nifti``).

By default the scan's anatomy proposals are deleted once version 1 of the finding was copied from one, so
the review screen shows the scan and the mask (no anatomy layers: ``--keep-layers`` keeps them).

    .venv/bin/python bench/bench_viewer.py [--repeats 3] [--slices 255] [--keep-layers]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_case_open import make_case, runserver  # noqa: E402
from bench.common import REPO, django_setup  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "pw-" + "x" * 12
TIMEOUT_MS = 300_000
UMD = REPO / "frontend" / "node_modules" / "@niivue" / "niivue" / "dist" / "niivue.umd.js"
MOVES = 12

BARE_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>plain NiiVue</title></head>
<body style="margin:0;background:#000">
<canvas id="gl" style="width:100vw;height:100vh;display:block"></canvas>
<script src="/bench-bare/niivue.umd.js"></script>
<script>
window.nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: false, isResizeCanvas: true,
  multiplanarShowRender: niivue.SHOW_RENDER.NEVER, multiplanarLayout: niivue.MULTIPLANAR_TYPE.ROW,
  penSize: 3 });
window.nvReady = nv.attachToCanvas(document.getElementById("gl"))
  .then(() => nv.setSliceType(nv.sliceTypeMultiplanar));
window.openBare = async (url) => {
  const t0 = performance.now();
  await nv.loadVolumes([{ url, name: "scan.nii", cal_min: -1350, cal_max: 150 }]);
  const loaded = performance.now() - t0;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const scan = performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= t0 && e.name.includes("/nifti/"))[0];
  return { tti: performance.now() - t0, loaded, fetch: scan ? scan.responseEnd - t0 : null };
};
</script></body></html>"""

# Per-move latency: each pointermove on the canvas (captured before NiiVue handles it) → two frames later.
MOVE_PROBE_JS = """() => {
  window.benchMoves = [];
  const canvas = document.querySelector("canvas");
  canvas.addEventListener("pointermove", (event) => {
    if (!(event.buttons & 1)) return;
    const t = event.timeStamp;
    requestAnimationFrame(() => requestAnimationFrame(() => window.benchMoves.push(performance.now() - t)));
  }, { capture: true });
}"""

# The axial tile's image on the page (CSS pixels), from NiiVue's own mapping (as tests/browser/ui.py).
RECT_JS = """() => {
  const nv = window.groundlabReview ? window.groundlabReview.nv : window.nv;
  const z = nv.scene.crosshairPos[2];
  const a = nv.frac2canvasPos([0, 0, z]), b = nv.frac2canvasPos([1, 1, z]);
  const r = nv.canvas.getBoundingClientRect();
  const sx = r.width / nv.canvas.width, sy = r.height / nv.canvas.height;
  return { x: r.left + Math.min(a[0], b[0]) * sx, y: r.top + Math.min(a[1], b[1]) * sy,
           width: Math.abs(b[0] - a[0]) * sx, height: Math.abs(b[1] - a[1]) * sy };
}"""


# What a load asks of NiiVue and the GPU (counted from before the click / loadVolumes until interactive):
# NiiVue's calls that redo textures or frames, the voxels sent to 3D textures (texImage3D / texSubImage3D;
# SwiftShader copies them in the GPU process) and the draw calls (each a pass rendered on the CPU).
LOAD_CALLS = [
    "updateGLVolume",
    "refreshLayers",
    "refreshColormaps",
    "refreshDrawing",
    "drawScene",
    "setSliceType",
]
LOAD_PROBE_JS = """(names) => {
  const nv = window.groundlabReview ? window.groundlabReview.nv : window.nv;
  const load = (window.benchLoad = { calls: {}, uploadMvox: 0, uploads: 0, draws: 0 });
  for (const name of names) {
    if (typeof nv[name] !== "function") continue;
    const original = nv[name].bind(nv);
    nv[name] = (...args) => { load.calls[name] = (load.calls[name] ?? 0) + 1; return original(...args); };
  }
  const gl = nv.gl;
  const wrap = (name, count) => {
    const original = gl[name].bind(gl);
    gl[name] = (...args) => { count(args); return original(...args); };
  };
  wrap("texImage3D", (a) => {
    if (a.length > 9 && a[9]) { load.uploads++; load.uploadMvox += a[3] * a[4] * a[5] / 1e6; }
  });
  wrap("texSubImage3D", (a) => { load.uploads++; load.uploadMvox += a[5] * a[6] * a[7] / 1e6; });
  wrap("drawArrays", () => load.draws++);
  wrap("drawElements", () => load.draws++);
}"""

# Where a stroke's time goes: NiiVue's methods that a stroke calls, their outermost time summed.
STEPS = ["drawPt", "drawPenLine", "refreshDrawing", "drawScene", "drawAddUndoBitmap"]
WRAP_JS = """(names) => {
  const nv = window.groundlabReview ? window.groundlabReview.nv : window.nv;
  window.benchSteps = {};
  let depth = 0;
  for (const name of names) {
    if (typeof nv[name] !== "function") continue;
    const original = nv[name].bind(nv);
    nv[name] = (...args) => {
      const t = performance.now();
      depth++;
      try { return original(...args); } finally {
        depth--;
        const step = (window.benchSteps[name] ??= { outer: 0, total: 0, calls: 0 });
        step.calls++;
        step.total += performance.now() - t;
        if (depth === 0) step.outer += performance.now() - t;
      }
    };
  }
}"""


def stroke(page, *, review: bool) -> dict:
    """One pen stroke across the axial tile: per-move latencies and the end (mouse up → recorded, drawn)."""
    page.evaluate(MOVE_PROBE_JS)
    page.evaluate(WRAP_JS, STEPS)
    if review:
        page.keyboard.press("p")
    else:
        page.evaluate(
            "() => { nv.createEmptyDrawing(); nv.setDrawingEnabled(true); nv.setPenValue(1, false); }"
        )
    rect = page.evaluate(RECT_JS)
    x0, y = rect["x"] + rect["width"] * 0.25, rect["y"] + rect["height"] * 0.45
    page.mouse.move(x0, y)
    t_down = time.perf_counter()
    page.mouse.down()
    for step in range(1, MOVES + 1):
        page.mouse.move(x0 + step * rect["width"] * 0.03, y + step * rect["height"] * 0.01)
    page.evaluate(
        "() => { window.benchUp = null; const c = document.querySelector('canvas');"
        " c.addEventListener('pointerup', (e) => { window.benchUp = e.timeStamp; },"
        " { capture: true, once: true }); }"
    )
    t_up = time.perf_counter()
    page.mouse.up()
    if review:
        page.wait_for_function(
            "() => performance.getEntriesByName('stroke-recorded').length > 0", timeout=TIMEOUT_MS
        )
        end = page.evaluate(
            "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() =>"
            " r(performance.now() - window.benchUp))))"
        )
        voxels = int(page.get_attribute("#review", "data-mask-voxels"))
    else:
        end = page.evaluate(
            "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() =>"
            " r(performance.now() - window.benchUp))))"
        )
        voxels = page.evaluate("() => nv.drawBitmap.reduce((n, v) => n + (v ? 1 : 0), 0)")
    t_done = time.perf_counter()
    page.wait_for_function(f"() => window.benchMoves.length >= {MOVES - 2}", timeout=TIMEOUT_MS)
    moves = page.evaluate("() => window.benchMoves")
    return {
        "move_median": statistics.median(moves),
        "move_max": max(moves),
        "end": end,
        "stroke_wall": (t_done - t_down) * 1000,
        "up_wall": (t_done - t_up) * 1000,
        "voxels": voxels,
        "steps": page.evaluate("() => window.benchSteps"),
    }


def open_review(context, base: str, slug: str) -> tuple[dict, object]:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/review/{slug}/")
    page.wait_for_selector("#review[data-state=idle]")
    page.evaluate(
        "() => document.querySelector('button[data-action=next]').addEventListener("
        "'click', () => { window.benchClick = performance.now(); }, { capture: true, once: true })"
    )
    page.evaluate(LOAD_PROBE_JS, LOAD_CALLS)
    page.click("button[data-action=next]")
    page.wait_for_function(
        "() => performance.getEntriesByName('case-rendered').length > 0", polling=20, timeout=TIMEOUT_MS
    )
    out = page.evaluate(
        """() => {
          const t0 = window.benchClick;
          const res = performance.getEntriesByType("resource").filter((e) => e.startTime >= t0);
          const nifti = res.find((e) => e.name.includes("/nifti/"));
          const mask = res.find((e) => e.name.includes("/mask/"));
          return {
            tti: performance.getEntriesByName("case-rendered")[0].startTime - t0,
            nifti_end: nifti ? nifti.responseEnd - t0 : null,
            nifti_wire: nifti ? nifti.encodedBodySize : null,
            nifti_body: nifti ? nifti.decodedBodySize : null,
            mask_end: mask ? mask.responseEnd - t0 : null,
            mask_wire: mask ? mask.encodedBodySize : null,
            // where the time goes: the screen's "case:<step>" measures (images.ts), ms summed per step
            steps: performance.getEntriesByType("measure")
              .filter((e) => e.startTime >= t0 && e.name.startsWith("case:"))
              .reduce((acc, e) => {
                acc[e.name.slice(5)] = (acc[e.name.slice(5)] ?? 0) + e.duration;
                return acc;
              }, {}),
            // the last draw of the load issued → the case-rendered mark (two frames rendered)
            frames: (() => {
              const draw = performance.getEntriesByName("case:draw").filter((e) => e.startTime >= t0).at(-1);
              const done = performance.getEntriesByName("case-rendered")[0].startTime;
              return draw ? done - (draw.startTime + draw.duration) : null;
            })(),
          };
        }"""
    )
    out["load"] = page.evaluate("() => JSON.parse(JSON.stringify(window.benchLoad))")
    out["voxels"] = int(page.get_attribute("#review", "data-mask-voxels"))
    out["mask_path"] = page.get_attribute("#review", "data-mask-path") or "nifti (before the runs)"
    # After the case is on screen the finding's anatomy layers load (issue 16: another volume, and the
    # scan's texture uploaded again): the stroke waits for them, as a user's would.
    t0 = time.perf_counter()
    page.wait_for_selector("#review[data-layers-state=ready]", timeout=TIMEOUT_MS * 2)
    out["layers_wall"] = (time.perf_counter() - t0) * 1000
    out["layers"] = page.get_attribute("#review", "data-layers") or ""
    if errors or page.get_attribute("#review", "data-message") == "error":
        raise RuntimeError(f"page errors: {errors} / {page.inner_text('#messages')}")
    return out, page


def open_bare(context, base: str, scan_id: int) -> tuple[dict, object]:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/bench-bare/")
    page.evaluate("() => window.nvReady")
    page.evaluate(LOAD_PROBE_JS, LOAD_CALLS)
    out = page.evaluate("(url) => window.openBare(url)", f"/api/scans/{scan_id}/nifti/")
    out["load"] = page.evaluate("() => JSON.parse(JSON.stringify(window.benchLoad))")
    if errors:
        raise RuntimeError(f"bare page errors: {errors}")
    return out, page


def fmt(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):,.0f} / {min(values):,.0f}" if values else "–"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=255)
    parser.add_argument(
        "--keep-layers",
        action="store_true",
        help="keep the scan's anatomy proposals (shown as layers after the case opens; on SwiftShader "
        "they take minutes to load on a 512x512x255 CT and double the cost of a frame)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        workdir = Path(tmp)
        django_setup(workdir)
        from core.services import user_create

        user_create(username="ann", password=PASSWORD)
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.get(username="ann")
        t0 = time.perf_counter()
        scan, _ = make_case("big", (args.slices, 512, 512), (1.0, 0.7, 0.7), user, workdir, proposal=True)
        setup_s = time.perf_counter() - t0
        if not args.keep_layers:
            from labeling.models import RegionProposal

            # version 1 (the right-lung mask) is a copy: the finding keeps it, the screen shows no layers
            RegionProposal.objects.filter(scan=scan).delete()
        nifti_size = (Path(os.environ["MEDIA_ROOT"]) / scan.file.name).stat().st_size

        with runserver(workdir) as base:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                context = browser.new_context(viewport={"width": 1920, "height": 1080})
                context.route(
                    f"{base}/bench-bare/",
                    lambda route: route.fulfill(status=200, content_type="text/html", body=BARE_HTML),
                )
                context.route(
                    f"{base}/bench-bare/niivue.umd.js",
                    lambda route: route.fulfill(status=200, content_type="text/javascript", path=str(UMD)),
                )
                login = context.new_page()
                login.goto(f"{base}/review/login/")
                login.fill("#id_username", "ann")
                login.fill("#id_password", PASSWORD)
                login.click("button[type=submit]")
                login.wait_for_load_state()
                renderer = login.evaluate(
                    "() => { const gl = document.createElement('canvas').getContext('webgl2');"
                    " const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');"
                    " return gl ? (ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : 'webgl2') : 'none'; }"
                )
                login.close()
                review, bare, review_strokes, bare_strokes = [], [], [], []
                for i in range(args.repeats):
                    # alternate which goes first, so that neither always meets a warm cache
                    order = ("bare", "review") if i % 2 == 0 else ("review", "bare")
                    for which in order:
                        if which == "bare":
                            out, page = open_bare(context, base, scan.pk)
                            bare.append(out)
                            bare_strokes.append(stroke(page, review=False))
                        else:
                            out, page = open_review(context, base, "big")
                            review.append(out)
                            review_strokes.append(stroke(page, review=True))
                            page.keyboard.press("Escape")
                        page.close()
                        print(f"  run {i + 1} {which}: done", flush=True)
                browser.close()

    first = review[0]
    print(
        f"WebGL renderer: {renderer}; CT 512x512x{args.slices} int16, "
        f"NIfTI {nifti_size / 1e6:.1f} MB on disk, "
        f"{(first['nifti_wire'] or 0) / 1e6:.1f} MB over the wire to the review screen "
        f"({(first['nifti_body'] or 0) / 1e6:.1f} MB decoded); v1 mask {first['voxels']:,} voxels; set-up "
        f"{setup_s:.0f} s; {args.repeats} opens each"
    )
    ratio = [r["tti"] / b["tti"] for r, b in zip(review, bare, strict=True)]
    print("| ms (median / best) | review screen | plain NiiVue (baseline) | target |")
    print("|---|---|---|---|")
    print(
        f"| **time to interactive** | {fmt(r['tti'] for r in review)} | {fmt(b['tti'] for b in bare)} "
        "| ≤ 1.2 × plain |"
    )
    print(f"| review / plain, per run | {', '.join(f'{x:.2f}' for x in ratio)} | | |")
    print(f"| scan received | {fmt(r['nifti_end'] for r in review)} | {fmt(b['fetch'] for b in bare)} | |")
    print(
        f"| mask received ({(first['mask_wire'] or 0) / 1e6:.2f} MB over the wire) | "
        f"{fmt(r['mask_end'] for r in review)} | | |"
    )
    print(
        f"| loaded (review: images.ts done; plain: loadVolumes resolved) | "
        f"{fmt(r['tti'] - (r['frames'] or 0) for r in review)} | {fmt(b['loaded'] for b in bare)} | |"
    )
    print(
        f"| then two frames → interactive | {fmt(r['frames'] for r in review)} | "
        f"{fmt(b['tti'] - b['loaded'] for b in bare)} | |"
    )
    for key, label in (
        ("uploadMvox", "M voxels sent to 3D textures"),
        ("uploads", "3D texture uploads"),
        ("draws", "draw calls (render passes)"),
    ):
        print(
            f"| while loading: {label} | {fmt(r['load'][key] for r in review)} | "
            f"{fmt(b['load'][key] for b in bare)} | |"
        )
    for name in LOAD_CALLS:
        print(
            f"| while loading: NiiVue `{name}` calls | "
            f"{fmt(r['load']['calls'].get(name, 0) for r in review)} | "
            f"{fmt(b['load']['calls'].get(name, 0) for b in bare)} | |"
        )
    print(f"| how the mask arrived (review) | {first['mask_path']} | | |")
    names = sorted({name for r in review for name in r["steps"]}, key=lambda n: -review[0]["steps"].get(n, 0))
    for name in names:
        print(
            f"| review step `case:{name}` (main thread, ms) | "
            f"{fmt(r['steps'].get(name) for r in review)} | | |"
        )
    print(
        f"| after interactive: anatomy layers loaded (ids {first['layers'] or 'none'}), "
        f"Playwright wall clock | {fmt(r['layers_wall'] for r in review)} | | |"
    )
    print(
        f"| **stroke: one mouse move → painted frame** (median of {MOVES}) | "
        f"{fmt(s['move_median'] for s in review_strokes)} | "
        f"{fmt(s['move_median'] for s in bare_strokes)} | < 100 |"
    )
    print(
        f"| stroke: slowest move | {fmt(s['move_max'] for s in review_strokes)} | "
        f"{fmt(s['move_max'] for s in bare_strokes)} | |"
    )
    print(
        f"| **stroke end: mouse up → recorded and drawn** | {fmt(s['end'] for s in review_strokes)} | "
        f"{fmt(s['end'] for s in bare_strokes)} | < 100 |"
    )
    print(
        f"| whole stroke, Playwright wall clock | {fmt(s['stroke_wall'] for s in review_strokes)} | "
        f"{fmt(s['stroke_wall'] for s in bare_strokes)} | |"
    )
    print(
        f"| voxels painted by the stroke (review: mask + stroke) | {review_strokes[0]['voxels']:,} | "
        f"{bare_strokes[0]['voxels']:,} | |"
    )
    for name in STEPS:
        cells = []
        for runs in (review_strokes, bare_strokes):
            got = [s["steps"].get(name) for s in runs]
            calls = got[0]["calls"] if got[0] else 0
            cells.append(f"{fmt(g['total'] for g in got if g)} ({calls} calls)" if calls else "–")
        print(f"| in the stroke: NiiVue `{name}`, total ms | {cells[0]} | {cells[1]} | |")


if __name__ == "__main__":
    main()
