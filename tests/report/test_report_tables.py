"""Table 2 rows: summaries and Wilcoxon p-values against scipy on the same per-patient values."""

import math

import numpy as np
import pytest
from scipy import stats

from vent.report.tables import table2_markdown, table2_rows


def _rows(seed=0, n=8):
    rng = np.random.default_rng(seed)
    out = []
    for model, shift in (("lstm", 0.0), ("lstm_raw", -0.1), ("bilstm", 0.0)):
        for i in range(n):
            values = {m: float(np.clip(0.7 + shift + rng.normal(0, 0.05), 0, 1))
                      for m in ("dice", "auc", "sensitivity", "accuracy")}
            out.append({"model": model, "case": f"S{i:02d}", "fold": i % 4, **values})
    return out


def test_summary_and_wilcoxon_match_scipy():
    per_patient = _rows()
    rows = table2_rows(per_patient, "lstm", ["lstm", "lstm_raw", "bilstm"])
    assert [r["model"] for r in rows] == ["lstm", "lstm_raw", "bilstm"]
    ref = {r["case"]: r["dice"] for r in per_patient if r["model"] == "lstm"}
    raw = {r["case"]: r["dice"] for r in per_patient if r["model"] == "lstm_raw"}
    expected_p = stats.wilcoxon([raw[c] - ref[c] for c in sorted(ref)]).pvalue
    assert rows[1]["dice_p"] == pytest.approx(expected_p, rel=1e-12)
    assert math.isnan(rows[0]["dice_p"])
    assert rows[1]["dice_mean"] == pytest.approx(np.mean(list(raw.values())))
    assert rows[1]["dice_min"] == min(raw.values()) and rows[1]["dice_max"] == max(raw.values())
    assert rows[0]["n_patients"] == 8


def test_markdown_marks_significance():
    rows = table2_rows(_rows(n=12), "lstm", ["lstm", "lstm_raw", "bilstm"])
    text = table2_markdown(rows, "lstm", alpha=0.01)
    lines = text.strip().splitlines()
    assert lines[2].startswith("| lstm (proposed) |") and "*" not in lines[2]
    assert rows[1]["dice_p"] < 0.01 and lines[3].count("*") >= 1  # 12 patients, a 0.1 shift: significant
    assert "(" in lines[3] and "-" in lines[3]
