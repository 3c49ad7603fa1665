#!/usr/bin/env python
"""Open a run's report in headless Chromium: every image loaded, no console error, page error or failed request.

Usage: python scripts/check_report.py RUN_DIR_OR_HTML [--screenshot PATH]

RUN_DIR_OR_HTML is a run folder (its report/report.html is opened) or an HTML file. Writes a full-page screenshot
(default: screenshot.png beside the HTML) and browser_check.json beside the HTML, prints a one-line summary and exits
1 when the check failed (2 for a missing browser or Playwright, as vent's ConfigError).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vent.errors import VentError
from vent.io.layout import report_file
from vent.report.browser import check_report_page


def _html_of(target: Path) -> Path:
    """The report HTML: ``target`` itself when it is a file, else the run folder's report/report.html."""
    return target if target.is_file() else report_file(target, "report.html")


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("target", type=Path, help="a run folder or a report HTML file")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG to write (default: beside the HTML)")
    args = parser.parse_args(argv)
    try:
        check = check_report_page(_html_of(args.target), args.screenshot)
    except VentError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(check.summary())
    for line in check.problems():
        print(f"  {line}", file=sys.stderr)
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
