"""vent.report.browser and scripts/check_report.py in real headless Chromium (never skipped: CI installs Chromium).

Each test that opens a page launches the browser once (about a second).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import matplotlib.image as mpimg
import numpy as np
import pytest

from vent.errors import ArtifactError, ConfigError
from vent.report.browser import check_in_browser, find_chromium

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_report.py"
TALL_PX = 1500
"""Height of a spacer block, so the page is taller than the 800 px viewport and the full-page screenshot is too."""


def _png_data_uri(seed: int) -> str:
    """A small seeded RGB PNG as a base64 data URI."""
    pixels = np.random.default_rng(seed).random((24, 32, 3))
    buffer = io.BytesIO()
    mpimg.imsave(buffer, pixels, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _write_page(path: Path, body: str) -> Path:
    """A self-contained HTML page with ``body``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "<meta charset='utf-8'><title>t</title>"
    path.write_text(f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>")
    return path


def _good_body() -> str:
    """Two embedded images and a spacer that makes the page TALL_PX+ high."""
    return (
        f"<img src='{_png_data_uri(0)}' alt='first figure' width='320' height='240'>"
        f"<div style='height:{TALL_PX}px'>spacer</div>"
        f"<img src='{_png_data_uri(1)}' alt='second figure' width='320' height='240'>"
    )


def _load_script() -> ModuleType:
    """Import scripts/check_report.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("check_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_page_whose_images_all_load_passes(tmp_path: Path) -> None:
    html = _write_page(tmp_path / "report.html", _good_body())
    shot = tmp_path / "shots" / "page.png"
    check = check_in_browser(html, shot)
    assert check.ok, check.to_dict()
    assert check.n_images == 2 and check.broken_images == []
    assert check.page_height_px > TALL_PX
    assert shot.is_file() and shot.stat().st_size > 0
    assert not list(shot.parent.glob(".tmp-*")), "the screenshot is written through a temporary name"
    height, width = mpimg.imread(shot).shape[:2]
    assert width == 1280 and abs(height - check.page_height_px) <= 2
    payload = json.loads(json.dumps(check.to_dict()))
    assert payload["ok"] is True and payload["html"] == str(html.resolve()) and payload["chromium_version"]


def test_a_corrupt_data_uri_image_is_broken(tmp_path: Path) -> None:
    corrupt = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n not a png at all").decode()
    body = f"<img src='{_png_data_uri(0)}' alt='fine'><img src='{corrupt}' alt='corrupt figure'>"
    check = check_in_browser(_write_page(tmp_path / "report.html", body), tmp_path / "shot.png")
    assert check.n_images == 2
    assert check.broken_images == ["corrupt figure"]
    assert not check.ok


def test_console_errors_are_collected_and_warnings_are_not(tmp_path: Path) -> None:
    body = "<p>text</p><script>console.warn('just a warning'); console.error('boom')</script>"
    check = check_in_browser(_write_page(tmp_path / "report.html", body), tmp_path / "shot.png")
    assert check.console_errors == ["boom"]
    assert check.n_images == 0 and not check.ok


def test_uncaught_exceptions_are_page_errors(tmp_path: Path) -> None:
    body = "<p>text</p><script>throw new Error('bad')</script>"
    check = check_in_browser(_write_page(tmp_path / "report.html", body), tmp_path / "shot.png")
    assert len(check.page_errors) == 1 and "bad" in check.page_errors[0]
    assert not check.ok


def test_a_missing_html_is_an_artifact_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "report" / "report.html"
    with pytest.raises(ArtifactError, match="report.html.*vent report CONFIG"):
        check_in_browser(missing, tmp_path / "shot.png")


def test_vent_chromium_must_name_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENT_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(ConfigError, match="VENT_CHROMIUM=.*no-such-chromium"):
        find_chromium()


def test_vent_chromium_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("VENT_CHROMIUM", str(fake))
    assert find_chromium() == str(fake)


def test_no_chromium_on_path_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VENT_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="apt-get install -y chromium"):
        find_chromium()


def test_script_checks_a_run_folder_and_writes_json_beside_the_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = _write_page(tmp_path / "run" / "report" / "report.html", _good_body())
    assert _load_script().main([str(tmp_path / "run")]) == 0
    assert "images loaded 2/2" in capsys.readouterr().out
    payload = json.loads(html.with_name("browser_check.json").read_text())
    assert payload["ok"] is True and Path(payload["screenshot"]) == html.with_name("screenshot.png").resolve()
    assert html.with_name("screenshot.png").is_file()


def test_script_exits_1_on_a_broken_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = _write_page(tmp_path / "page.html", "<script>throw new Error('bad')</script>")
    assert _load_script().main([str(html), "--screenshot", str(tmp_path / "s.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("FAILED") and "page error" in captured.err
    assert json.loads(html.with_name("browser_check.json").read_text())["ok"] is False


def test_a_missing_playwright_is_a_config_error_saying_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # makes the import raise ImportError
    html = _write_page(tmp_path / "report.html", "<p>text</p>")
    with pytest.raises(ConfigError, match=r"pip install -e \"\.\[test\]\""):
        check_in_browser(html, tmp_path / "shot.png")


def test_a_browser_that_does_not_start_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VENT_CHROMIUM", "/bin/false")
    html = _write_page(tmp_path / "report.html", "<p>text</p>")
    with pytest.raises(ConfigError, match="Chromium at /bin/false did not start"):
        check_in_browser(html, tmp_path / "shot.png", timeout_s=20)
