"""Dead-code check: vulture over src/, tests/ and scripts/ together reports nothing in src/ (run by `make test`).

A function, class, method or variable of src/vent that nothing calls or reads (not the package, not a test, not a
benchmark script) fails this test. Framework-called code (Typer commands, pydantic validators) is skipped by its
decorator; the remaining false positives are listed, with reasons, in tests/dead_code_whitelist.py. Confidence 60%
is vulture's default for unused functions and attributes.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_src_has_no_dead_code() -> None:
    from vulture import Vulture  # a test dependency: a missing vulture is an error, never a skip

    checker = Vulture(
        ignore_names=["model_config", "__getattr__"],
        ignore_decorators=["@app.command", "@app.callback", "@field_validator", "@model_validator"],
    )
    checker.scavenge([str(ROOT / "src" / "vent"), str(ROOT / "tests"), str(ROOT / "scripts")])
    src = ROOT / "src" / "vent"
    dead = [
        f"{Path(item.filename).relative_to(ROOT)}:{item.first_lineno} {item.typ} {item.name!r}"
        for item in checker.get_unused_code(min_confidence=60)
        if Path(item.filename).resolve().is_relative_to(src)
    ]
    assert dead == [], "unused code in src/vent (delete it, or whitelist a library-called name):\n" + "\n".join(dead)
