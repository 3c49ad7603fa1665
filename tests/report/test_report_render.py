"""The document renders one model to Markdown and to self-contained HTML: contents, anchors, collapsed blocks, figure
files named beside the embedded image."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt

from vent.report.figures import save_figure
from vent.report.render import Document, anchor_of
from vent.report.tables import Table


def test_contents_link_every_section_and_long_blocks_collapse(tmp_path) -> None:
    doc = Document("A report")
    doc.heading("Table 2: defect prediction")
    doc.table(Table(["a", "b"], [[1, 2]]), summary="The listing")
    doc.heading("Provenance")
    doc.code("run_dir: run\n", summary="The effective config")
    page = doc.to_html()
    assert re.findall(r"<a href='#([^']+)'>", page) == [anchor_of("Table 2: defect prediction"), "provenance"]
    assert "id='table-2-defect-prediction'" in page and "id='provenance'" in page
    assert "<details><summary>The listing</summary><table" in page
    assert "<details><summary>The effective config</summary><pre>run_dir: run" in page
    markdown = doc.to_markdown(tmp_path)
    assert "**The effective config**\n\n```\nrun_dir: run\n```" in markdown and "| a | b |" in markdown


def test_a_figure_is_embedded_and_names_its_png_and_svg(tmp_path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, tmp_path / "line.png")
    doc = Document("A report")
    doc.image(path, "A line.")
    page = doc.to_html()
    assert "<figure data-file='line.png'><img src='data:image/png;base64," in page
    assert "<a href='line.png'>line.png</a>, <a href='line.svg'>line.svg</a>" in page
    assert doc.figure_files() == [path, path.with_suffix(".svg")]
    assert "![A line.](line.png)" in doc.to_markdown(tmp_path)
