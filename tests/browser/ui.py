"""The review screen's browser tests' shared parts: Chromium through Playwright (the ``browser`` fixture),
logging in, taking the next case, the message area, NiiVue's image rectangle, drags and the drawn voxel
count. Waits are functions, never strings the page would eval (the screen's CSP has no unsafe-eval)."""

from pathlib import Path

import pytest

from tests.conftest import REPO, need_service

CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = REPO / "frontend" / "dist" / "review.js"
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "pw-" + "x" * 12
TIMEOUT_MS = 30_000


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        need_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)")
    if not BUNDLE.exists():
        need_service("the review bundle", f"{BUNDLE} is missing (make frontend)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", "pip install -r requirements-dev.txt")
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


def open_review(browser, live_server, username: str, slug: str, viewport: tuple[int, int] = (1400, 900)):
    """A fresh browser session: log in through the login page, land on the review screen."""
    page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/review/{slug}/")
    assert "/review/login/" in page.url  # login required
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/review/{slug}/")
    page.wait_for_selector("#review[data-state=idle]")
    page.errors = errors
    return page


def next_case(page) -> None:
    page.keyboard.press("n")
    page.wait_for_selector("#review[data-state=ready]:not([data-busy])")
    page.wait_for_timeout(300)  # one more frame of the viewer


def message(page) -> str:
    return page.inner_text("#messages")


def wait_message(page, kind: str, text: str) -> None:
    page.wait_for_function(
        "([kind, text]) => document.querySelector('#review').dataset.message === kind"
        " && document.querySelector('#messages').innerText.includes(text)",
        arg=[kind, text],
    )


def image_rect(page) -> dict:
    """Where NiiVue shows the image on the page (CSS pixels): the corners of the volume (fractions 0 and 1)
    on its axial tile (the only one for a radiograph), from NiiVue's own mapping."""
    return page.evaluate(
        """() => {
          const nv = window.groundlabReview.nv;
          const z = nv.scene.crosshairPos[2];
          const a = nv.frac2canvasPos([0, 0, z]), b = nv.frac2canvasPos([1, 1, z]);
          const r = nv.canvas.getBoundingClientRect();
          const sx = r.width / nv.canvas.width, sy = r.height / nv.canvas.height;
          return {
            x: r.left + Math.min(a[0], b[0]) * sx, y: r.top + Math.min(a[1], b[1]) * sy,
            width: Math.abs(b[0] - a[0]) * sx, height: Math.abs(b[1] - a[1]) * sy,
          };
        }"""
    )


def at(rect: dict, fx: float, fy: float) -> tuple[float, float]:
    return rect["x"] + fx * rect["width"], rect["y"] + fy * rect["height"]


def drag(page, points: list[tuple[float, float]], steps: int = 6) -> None:
    """Press at the first point, move through the others (in small steps), release at the last."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        for step in range(1, steps + 1):
            page.mouse.move(x0 + (x1 - x0) * step / steps, y0 + (y1 - y0) * step / steps)
    page.mouse.up()


def voxels(page) -> int:
    return int(page.get_attribute("#review", "data-mask-voxels"))


def wait_voxels(page, predicate: str) -> int:
    """Wait until the drawn voxel count satisfies ``predicate`` (JavaScript of ``n``), return it."""
    count = "Number(document.querySelector('#review').dataset.maskVoxels)"
    page.wait_for_function(f"() => {{ const n = {count}; return {predicate}; }}")
    return voxels(page)


def open_finding(page, finding_id: int) -> None:
    page.click(f"#findings li[data-finding='{finding_id}']")
    page.wait_for_selector(f"#review[data-finding='{finding_id}'][data-state=ready]:not([data-busy])")
    page.wait_for_timeout(300)
