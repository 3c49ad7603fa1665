"""Shape rules the codebase keeps (issue "one house for every method"): short stage functions, one layout module."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vent"
MAX_STAGE_FUNCTION_LINES = 60
"""A stage function reads through vent.io, calls pure functions and writes through vent.io: it stays short."""


def test_no_stage_function_is_longer_than_sixty_lines() -> None:
    long = []
    for path in sorted((SRC / "stages").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_STAGE_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "split these stage functions: " + ", ".join(long)


def test_run_folder_paths_are_built_only_in_the_layout_module() -> None:
    """No ``something / "name"`` path joins of run-folder artifacts outside vent/io/layout.py (readers and stages ask
    layout). Not artifacts: a subject's input folder (io/vampire.py), the synthetic cohorts written in that layout
    (synth/writer.py, synth/from_ct.py) and `vent features`' user-named output folder (radiomics/maps.py)."""
    allowed = {"io/layout.py", "io/vampire.py", "synth/writer.py", "synth/from_ct.py", "radiomics/maps.py"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if str(path.relative_to(SRC)) in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_join = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
            right = node.right if is_join else None
            if isinstance(right, ast.JoinedStr) or (isinstance(right, ast.Constant) and isinstance(right.value, str)):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == [], "build these paths with vent.io.layout: " + ", ".join(found)
