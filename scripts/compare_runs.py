#!/usr/bin/env python
"""Compare two runs' reports: are the tables and figures the same (to the byte / pixel)?

Usage: python scripts/compare_runs.py NEW_RUN_DIR BASELINE_RUN_DIR   (for example two commits, same config and seed)
       python scripts/compare_runs.py --all RUN_A RUN_B   (every artifact of two runs: vent.io.compare)

- table2.csv, table2.md, per_patient_metrics.csv: byte-equal;
- every *.png: pixel-equal (matplotlib.image.imread arrays; byte equality is reported too); *.svg and *.csv: bytes;
- volumes/: the same files, byte-equal;
- report.md: line by line; a differing line is EXPECTED only if it matches EXPECTED_MD_LINES
  (``vent.io.compare.RUN_SPECIFIC_LINES``: the provenance names
  the config file, the run folder, the stages' times and the versions, which differ between two runs), otherwise
  UNEXPECTED; manifest.json, screenshot.png and browser_check.json are not compared (NOT_COMPARED), nor the seals
  (``.<name>.seal.json``: each restates its file's hash and stat);
- report.html: the text with the embedded images cut out must match except EXPECTED lines; the embedded images
  are compared pixel by pixel, in order.

Exit status 0 when everything is equal or an expected difference, 1 otherwise.
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import re
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np

from vent.io.compare import RUN_SPECIFIC_LINES as EXPECTED_MD_LINES
from vent.io.compare import compare_run_folders
from vent.io.seals import SEAL_SUFFIX

BYTE_EQUAL = ("table2.csv", "table2.md", "per_patient_metrics.csv")
NOT_COMPARED = {
    "manifest.json": "the stage's timing and provenance",
    "screenshot.png": "a browser's rendering (vent report --check), not a result",
    "browser_check.json": "the browser check's record",
}
"""Report files that differ between two runs of the same config by design."""
_IMG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _pixels(data: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(data), format="png")


def _same_pixels(a: bytes, b: bytes) -> tuple[bool, str]:
    x, y = _pixels(a), _pixels(b)
    if x.shape != y.shape:
        return False, f"shape {x.shape} vs {y.shape}"
    diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
    n = int(np.count_nonzero(diff.max(axis=-1) if diff.ndim == 3 else diff))
    return n == 0, f"{n} pixels differ (max {diff.max():.3g})" if n else "pixel-equal"


def _expected(line: str) -> str | None:
    for pattern, why in EXPECTED_MD_LINES.items():
        if re.match(pattern, html.unescape(line.removeprefix("<p>").removesuffix("</p>"))):
            return why
    return None


def _compare_lines(name: str, old: str, new: str) -> bool:
    """Print the differing lines, each EXPECTED (with why) or UNEXPECTED; True when all are expected."""
    ok = True
    a, b = old.splitlines(), new.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for line in [*(("-", x) for x in a[i1:i2]), *(("+", x) for x in b[j1:j2])]:
            why = _expected(line[1])
            ok &= why is not None
            shown = line[1] if len(line[1]) < 300 else line[1][:300] + " ..."
            print(f"  {name} {line[0]} {'EXPECTED (' + why + ')' if why else 'UNEXPECTED'}: {shown}")
    return ok


def main(new_run: Path, base_run: Path) -> int:
    new, base = new_run / "report", base_run / "report"
    ok = True
    names = sorted(({p.name for p in base.iterdir()} | {p.name for p in new.iterdir()}) - set(NOT_COMPARED))
    names = [name for name in names if not name.endswith(SEAL_SUFFIX)]
    for name in names:
        a, b = base / name, new / name
        if a.is_dir() or b.is_dir():
            ok &= _compare_folder(name, a, b)
            continue
        if not (a.is_file() and b.is_file()):
            print(f"MISSING  {name}: {'only in baseline' if a.is_file() else 'only in new run'}")
            ok = False
            continue
        old_bytes, new_bytes = a.read_bytes(), b.read_bytes()
        if name in BYTE_EQUAL:
            same = old_bytes == new_bytes
            ok &= same
            print(f"{'EQUAL   ' if same else 'DIFFER  '} {name} (bytes)")
            if not same:
                _compare_lines(name, old_bytes.decode(), new_bytes.decode())
        elif name.endswith(".png"):
            same, detail = _same_pixels(old_bytes, new_bytes)
            ok &= same
            bytes_note = "equal" if old_bytes == new_bytes else "differ"
            print(f"{'EQUAL   ' if same else 'DIFFER  '} {name} ({detail}; bytes {bytes_note})")
        elif name == "report.md":
            same = old_bytes == new_bytes
            lines_ok = same or _compare_lines(name, old_bytes.decode(), new_bytes.decode())
            ok &= lines_ok
            print(f"{'EQUAL   ' if same else 'EXPECTED' if lines_ok else 'DIFFER  '} {name}")
        elif name == "report.html":
            ok &= _compare_html(old_bytes.decode(), new_bytes.decode())
        else:
            same = old_bytes == new_bytes
            ok &= same
            print(f"{'EQUAL   ' if same else 'DIFFER  '} {name} (bytes)")
    print("RESULT:", "identical up to the expected lines" if ok else "DIFFERENCES (see above)")
    return 0 if ok else 1


def _compare_folder(name: str, old: Path, new: Path) -> bool:
    """A folder of the report (volumes/): the same files, each byte-equal."""
    files = sorted({p.relative_to(old) for p in old.rglob("*") if p.is_file() and not p.name.endswith(SEAL_SUFFIX)}
                   | {p.relative_to(new) for p in new.rglob("*") if p.is_file() and not p.name.endswith(SEAL_SUFFIX)})
    differ = [f for f in files if not ((old / f).is_file() and (new / f).is_file()
                                       and (old / f).read_bytes() == (new / f).read_bytes())]
    print(f"{'EQUAL   ' if not differ else 'DIFFER  '} {name}/ ({len(files)} files, {len(differ)} differ)")
    for f in differ[:10]:
        print(f"  {name}/{f}")
    return not differ


def _compare_html(old: str, new: str) -> bool:
    old_images, new_images = _IMG.findall(old), _IMG.findall(new)
    ok = len(old_images) == len(new_images)
    if not ok:
        print(f"  report.html: {len(old_images)} embedded images in the baseline, {len(new_images)} in the new run")
    for k, (x, y) in enumerate(zip(old_images, new_images)):
        same, detail = _same_pixels(base64.b64decode(x), base64.b64decode(y))
        ok &= same
        if not same:
            print(f"  report.html image {k}: {detail}")
    text_old, text_new = _IMG.sub("data:image/png;base64,<IMAGE>", old), _IMG.sub("data:image/png;base64,<IMAGE>", new)
    same_text = text_old == text_new
    lines_ok = same_text or _compare_lines("report.html", text_old, text_new)
    ok &= lines_ok
    status = "EQUAL   " if same_text and ok else "EXPECTED" if ok else "DIFFER  "
    print(f"{status} report.html (text; {len(new_images)} embedded images compared pixel by pixel)")
    return ok


def compare_all(a: Path, b: Path) -> int:
    """Every artifact of two run folders (``vent.io.compare.compare_run_folders``); 0 when they are equal."""
    differences = compare_run_folders(a, b)
    for line in differences:
        print(f"DIFFER   {line}")
    print("RESULT:", "every artifact equal (up to vent.io.compare's run-specific fields)" if not differences
          else f"{len(differences)} DIFFERENCES (see above)")
    return 1 if differences else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--all":
        sys.exit(compare_all(Path(sys.argv[2]), Path(sys.argv[3])))
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
