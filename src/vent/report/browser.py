"""Open a report HTML in real headless Chromium: did every image load, and did the page stay free of errors?

Reads: one HTML file (normally ``runs/<run>/report/report.html``, self-contained, images as base64 data URIs).
Writes: a full-page PNG screenshot (atomically). The caller decides where the check's JSON goes
(``scripts/check_report.py`` writes ``browser_check.json`` beside the HTML).

The browser is the system Chromium (``$VENT_CHROMIUM`` or ``chromium`` / ``chromium-browser`` / ``google-chrome`` on
PATH), driven through Playwright's sync API; Playwright's own browser downloads are never used. How errors surface
for a ``file://`` page in Chromium:

- a missing linked file (``<img src="missing.png">``) fires ``requestfailed`` (``net::ERR_FILE_NOT_FOUND``) *and* a
  console error ``Failed to load resource: ...``;
- a corrupt data-URI image fires neither: only the image check (``complete`` / ``naturalWidth``) finds it;
- ``console.error`` is a console message of type ``"error"`` (``console.warn`` is ``"warning"`` and is not counted);
- an uncaught exception in a script is a ``pageerror``, not a console message.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vent.errors import ArtifactError, ConfigError
from vent.io.atomic import atomic_path

__all__ = ["BrowserCheck", "check_in_browser", "find_chromium"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
"""Executables looked up on PATH, in this order, when ``$VENT_CHROMIUM`` is not set."""

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Flags for a headless run as root on a machine without network (no background connections to refuse)."""

VIEWPORT_HEIGHT_PX = 800
"""Viewport height; the full-page screenshot is as tall as the page (at least this)."""

SRC_PREFIX_CHARS = 60
"""How much of an image's ``src`` names it when it has no alt text (a data URI is long)."""

_INSTALL_HINT = "install it (apt-get update && apt-get install -y chromium) or set VENT_CHROMIUM to its executable"

# Waits for every <img> to decode (a failed decode is caught, the image is judged below) or for the time limit,
# then lists the images that did not load: alt text, else the start of their src.
_IMAGES_JS = """
async ([timeoutMs, prefixChars]) => {
  const images = Array.from(document.images);
  const decodes = Promise.all(images.map((img) => img.decode().catch(() => null)));
  await Promise.race([decodes, new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  const broken = images.filter((img) => !img.complete || img.naturalWidth === 0);
  return {
    n_images: images.length,
    broken: broken.map((img) => img.alt || (img.currentSrc || img.src).slice(0, prefixChars)),
  };
}
"""

_PAGE_HEIGHT_JS = "Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)"


@dataclass(frozen=True)
class BrowserCheck:
    """What headless Chromium saw when it opened one HTML file.

    Attributes:
        html: The HTML file that was opened.
        screenshot: The full-page PNG screenshot written.
        n_images: Number of ``<img>`` elements on the page (0 is not an error here; the caller decides).
        broken_images: One entry per image that did not load (alt text, else the start of its ``src``).
        console_errors: Text of every console message of type ``"error"``.
        page_errors: Uncaught exceptions (``"Name: message"``).
        failed_requests: ``"url: failure"`` for every request that failed.
        page_height_px: Height of the page in CSS pixels (device scale factor 1, so also screenshot pixels).
        chromium_version: The browser's version string.
    """

    html: Path
    screenshot: Path
    n_images: int
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    page_height_px: int = 0
    chromium_version: str = ""

    @property
    def ok(self) -> bool:
        """True when every image loaded and no console error, page error or failed request occurred."""
        return not (self.broken_images or self.console_errors or self.page_errors or self.failed_requests)

    def to_dict(self) -> dict[str, Any]:
        """The check as plain JSON types (paths as strings), with ``ok`` included."""
        payload = asdict(self)
        payload["html"] = str(self.html)
        payload["screenshot"] = str(self.screenshot)
        payload["ok"] = self.ok
        return payload

    def summary(self) -> str:
        """One line: verdict, images loaded, error counts, screenshot and page height."""
        loaded = self.n_images - len(self.broken_images)
        return (
            f"{'OK' if self.ok else 'FAILED'}: images loaded {loaded}/{self.n_images}, console errors "
            f"{len(self.console_errors)}, page errors {len(self.page_errors)}, failed requests "
            f"{len(self.failed_requests)}; screenshot {self.screenshot} ({self.page_height_px} px tall, Chromium "
            f"{self.chromium_version})"
        )

    def problems(self) -> list[str]:
        """One line per problem found ("broken image: ...", "console error: ...", ...)."""
        groups = {
            "broken image": self.broken_images,
            "console error": self.console_errors,
            "page error": self.page_errors,
            "failed request": self.failed_requests,
        }
        return [f"{kind}: {item}" for kind, items in groups.items() for item in items]


def check_report_page(html: Path, screenshot: Path | None = None) -> BrowserCheck:
    """:func:`check_in_browser` on a report page, writing its screenshot (default ``screenshot.png`` beside the HTML)
    and the result as ``browser_check.json`` beside the HTML (atomically)."""
    from vent.io.atomic import write_json

    html = Path(html)
    check = check_in_browser(html, screenshot or html.with_name("screenshot.png"))
    write_json(html.with_name("browser_check.json"), check.to_dict())
    return check


def find_chromium() -> str:
    """Return the Chromium executable to drive.

    ``$VENT_CHROMIUM`` wins when set, and must name an existing file; otherwise the first of
    :data:`CHROMIUM_NAMES` found on PATH.

    Returns:
        Path of the browser executable.

    Raises:
        ConfigError: ``$VENT_CHROMIUM`` names no file, or no Chromium is on PATH.
    """
    override = os.environ.get("VENT_CHROMIUM")
    if override:
        if not Path(override).is_file():
            raise ConfigError(
                f"VENT_CHROMIUM={override!r} is not a file: point it at a Chromium executable, or unset "
                f"it to use {' / '.join(CHROMIUM_NAMES)} from PATH"
            )
        return override
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(f"no Chromium found on PATH (looked for {', '.join(CHROMIUM_NAMES)}): {_INSTALL_HINT}")


def check_in_browser(html: Path, screenshot: Path, width: int = 1280, timeout_s: float = 60) -> BrowserCheck:
    """Open ``html`` in headless Chromium, wait for its images, screenshot the full page and report what went wrong.

    Args:
        html: The HTML file to open (as a ``file://`` URI).
        screenshot: Where to write the full-page PNG (atomically; folders are created).
        width: Viewport width in CSS pixels.
        timeout_s: Limit for launching, loading, image decoding and the screenshot, each, in seconds.

    Returns:
        The :class:`BrowserCheck`; look at ``ok``.

    Raises:
        ArtifactError: ``html`` does not exist, or the page did not load in time.
        ConfigError: Playwright is not installed, or Chromium is missing or would not start.
    """
    html = Path(html).resolve()
    if not html.is_file():
        raise ArtifactError(f"{html}: no report HTML here; run `vent report CONFIG` first")
    sync_playwright, playwright_error = _import_playwright()
    executable = find_chromium()
    with sync_playwright() as playwright:
        browser = _launch(playwright, executable, timeout_s, playwright_error)
        try:
            return _check_page(browser, html, Path(screenshot).resolve(), width, timeout_s, playwright_error)
        finally:
            browser.close()


def _import_playwright() -> tuple[Any, type[Exception]]:
    """Return Playwright's ``sync_playwright`` and ``Error``, or raise a ConfigError saying how to install it."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as err:
        raise ConfigError(
            f'the browser check needs Playwright ({err}): run `pip install -e ".[test]"` '
            "(or `pip install playwright`); it drives the system Chromium, no browser download"
        ) from err
    return sync_playwright, Error


def _launch(playwright: Any, executable: str, timeout_s: float, playwright_error: type[Exception]) -> Any:
    """Start headless Chromium from ``executable``; a browser that will not start is a ConfigError naming it."""
    try:
        return playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS), timeout=timeout_s * 1000
        )
    except playwright_error as err:
        raise ConfigError(f"Chromium at {executable} did not start ({_first_line(err)}): {_INSTALL_HINT}") from err


def _check_page(
    browser: Any, html: Path, screenshot: Path, width: int, timeout_s: float, playwright_error: type[Exception]
) -> BrowserCheck:
    """Load ``html`` in a new page of ``browser``, collect events and image states, write the screenshot."""
    page = browser.new_page(viewport={"width": width, "height": VIEWPORT_HEIGHT_PX}, device_scale_factor=1)
    page.set_default_timeout(timeout_s * 1000)
    events: dict[str, list[str]] = {"console": [], "page": [], "requests": []}
    _listen(page, events)
    try:
        page.goto(html.as_uri(), wait_until="load")
        images = page.evaluate(_IMAGES_JS, [timeout_s * 1000, SRC_PREFIX_CHARS])
        height = int(page.evaluate(_PAGE_HEIGHT_JS))
        _write_screenshot(page, screenshot)
    except playwright_error as err:
        raise ArtifactError(f"{html}: Chromium could not load and screenshot it ({_first_line(err)})") from err
    return BrowserCheck(
        html=html,
        screenshot=screenshot,
        n_images=int(images["n_images"]),
        broken_images=list(images["broken"]),
        console_errors=events["console"],
        page_errors=events["page"],
        failed_requests=events["requests"],
        page_height_px=height,
        chromium_version=browser.version,
    )


def _listen(page: Any, events: dict[str, list[str]]) -> None:
    """Append console errors, uncaught exceptions and failed requests of ``page`` to ``events`` as they happen."""
    page.on("console", lambda message: events["console"].append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: events["page"].append(f"{error.name}: {error.message}"))
    page.on("requestfailed", lambda request: events["requests"].append(f"{_short_url(request.url)}: {request.failure}"))


def _write_screenshot(page: Any, screenshot: Path) -> None:
    """Write a full-page PNG of ``page`` to ``screenshot`` through a temporary name."""
    with atomic_path(screenshot) as tmp:
        page.screenshot(path=str(tmp), full_page=True, type="png")


def _short_url(url: str) -> str:
    """``url``, cut to a readable length (a failed data URI would otherwise carry a whole image)."""
    return url if len(url) <= 200 else url[:200] + "..."


def _first_line(err: Exception) -> str:
    """The first line of an error message (Playwright appends long call logs)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
