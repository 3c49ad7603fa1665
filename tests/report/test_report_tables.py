"""The report's table model (vent.report.tables): one model, rendered to Markdown, HTML and CSV that agree; Table 2
and the per-patient table; Table 2's summaries and Wilcoxon p-values against scipy (vent.evaluation)."""

import csv
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from vent.evaluation import table2_rows
from vent.io.evaluation import table2_columns
from vent.report.render import Document
from vent.report.tables import Cell, Column, Table, per_patient_table, table2_markdown, table2_table


def _rows(seed=0, n=8):
    rng = np.random.default_rng(seed)
    out = []
    for model, shift in (("lstm", 0.0), ("lstm_raw", -0.1), ("bilstm", 0.0)):
        for i in range(n):
            values = {m: float(np.clip(0.7 + shift + rng.normal(0, 0.05), 0, 1))
                      for m in ("dice", "auc", "sensitivity", "accuracy")}
            out.append({"model": model, "case": f"S{i:02d}", "fold": i % 4, **values})
    return out


class _Cells(HTMLParser):
    """The text of every th/td, row by row."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _html_cells(text):
    parser = _Cells()
    parser.feed(text)
    return parser.rows


def _markdown_cells(text):
    """Cells of a Markdown table: split on unescaped pipes, then unescape (the inverse of the renderer)."""
    rows = []
    for line in text.strip().splitlines():
        if set(line) <= {"|", "-"}:
            continue
        parts = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        rows.append([p.strip().replace("\\|", "|").replace("&lt;", "<").replace("\\\\", "\\") for p in parts])
    return rows


def _model():
    return Table(
        ["name", Column("score", ("score",)), "note"],
        [["a", Cell("0.50", (0.5,)), "plain"], ["b|c", Cell("n/a", (math.nan,)), "x < y & <b>bold</b>"]],
    )


def test_markdown_html_and_csv_of_one_model_agree():
    table = _model()
    shown = [["name", "score", "note"], ["a", "0.50", "plain"], ["b|c", "n/a", "x < y & <b>bold</b>"]]
    assert _markdown_cells(table.to_markdown()) == shown
    assert _html_cells(table.to_html()) == shown
    assert list(csv.reader(io.StringIO(table.to_csv()))) == [
        ["name", "score", "note"], ["a", "0.5", "plain"], ["b|c", "", "x < y & <b>bold</b>"]
    ]


def test_pipes_and_angle_brackets_are_escaped():
    table = _model()
    markdown, page = table.to_markdown(), table.to_html()
    assert "| b\\|c |" in markdown and "x &lt; y & &lt;b>bold&lt;/b>" in markdown
    assert all(line.count("|") - line.count("\\|") == 4 for line in markdown.splitlines())  # 3 columns, every row
    assert "<b>" not in page and "x &lt; y &amp; &lt;b&gt;bold&lt;/b&gt;" in page and "<td>b|c</td>" in page
    assert '"b|c"' not in table.to_csv() and "<b>bold</b>" in table.to_csv()  # CSV: raw text, quoted only as needed


def test_caption_and_notes_render_in_markdown_and_html_not_csv():
    table = Table(["a"], [[1]], caption="Counts | per case", notes=["n < 3"])
    markdown = table.to_markdown()
    assert markdown.startswith("**Counts \\| per case**\n\n| a |") and markdown.rstrip().endswith("*n &lt; 3*")
    assert "<caption>Counts | per case</caption>" in table.to_html() and "n &lt; 3" in table.to_html()
    assert table.to_csv() == "a\r\n1\r\n"


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        Table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="2 CSV values for 1 fields"):
        Table(["a"], [[Cell("x", (1, 2))]])


def test_document_renders_the_table_model():
    doc = Document("t")
    table = doc.table(_model())
    assert doc.table(["h"], [[1]]).to_markdown() == "| h |\n|---|\n| 1 |\n"
    markdown = doc.to_markdown(relative_to=Path("."))
    assert table.to_markdown().strip() in markdown
    assert table.to_html() in doc.to_html()


def test_table2_model_csv_has_the_evaluate_columns_and_six_digits():
    rows = table2_rows(_rows(), "lstm", ["lstm", "lstm_raw", "bilstm"])
    table = table2_table(rows, "lstm", 0.01, {"lstm": "LSTM"})
    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert list(parsed[0]) == table2_columns()
    assert [r["model"] for r in parsed] == ["lstm", "lstm_raw", "bilstm"]
    assert parsed[0]["dice_p"] == "" and parsed[1]["dice_p"] == f"{rows[1]['dice_p']:.6g}"
    assert parsed[1]["auc_mean"] == f"{rows[1]['auc_mean']:.6g}" and parsed[1]["n_patients"] == "8"
    assert _html_cells(table.to_html())[1][0] == "LSTM (proposed)"
    assert table.to_markdown() == table2_markdown(rows, "lstm", 0.01, {"lstm": "LSTM"})


def test_per_patient_table_shows_three_decimals_and_writes_six_digits():
    per_patient = _rows(n=2)
    table = per_patient_table(per_patient)
    first = per_patient[0]
    assert _markdown_cells(table.to_markdown())[1] == [
        "lstm", "S00", "0", *[f"{first[m]:.3f}" for m in ("dice", "auc", "sensitivity", "accuracy")]
    ]
    assert table.to_csv().splitlines()[1] == ",".join(
        ["lstm", "S00", "0", *[f"{first[m]:.6g}" for m in ("dice", "auc", "sensitivity", "accuracy")]]
    )


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
