"""A small document model rendered to Markdown and to one self-contained HTML file (images embedded as base64).

Tables are :class:`vent.report.tables.Table` models; each output renders the same model (nothing is parsed back).
The HTML needs no script, no network and no other file: it opens offline and prints (figures never split across
pages). Each figure names its PNG and SVG files (relative links in the report folder) so a reader can take the vector
version for a paper; ``figure_files`` lists them for checks.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vent.report.tables import Table

__all__ = ["Document", "anchor_of"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.88em}td,th{border:1px solid #ccc;padding:3px 7px;"
    "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "figure{margin:1.2em 0;break-inside:avoid}img{max-width:100%;border:1px solid #eee}"
    "figcaption{font-size:0.85em;color:#444;margin-top:0.3em}figcaption a{color:#36c}"
    "pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.8em}code{background:#f5f5f5;padding:1px 3px}"
    "nav{background:#fafafa;border:1px solid #eee;padding:0.5em 1em;font-size:0.9em}nav ol{margin:0.3em 0}"
    "details{margin:0.8em 0}summary{cursor:pointer;font-weight:600}"
    "@media print{nav{display:none}body{max-width:none}}"
)


def anchor_of(text: str) -> str:
    """The HTML id of a heading: lower case, words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def code(self, text: str, summary: str | None = None) -> None:
        """Preformatted text (a config, a log); collapsed under ``summary`` in the HTML when given."""
        self.blocks.append(("code", text, summary))

    def table(self, table: Table | list[str], rows: list[list[Any]] | None = None, summary: str | None = None) -> Table:
        """Add a :class:`Table` (or build one from a header and rows); collapsed under ``summary`` in the HTML when
        given (a long listing). Returns the table."""
        if not isinstance(table, Table):
            table = Table(list(table), rows or [])
        elif rows is not None:
            raise TypeError("Document.table: pass a Table, or a header and rows, not both")
        self.blocks.append(("table", table, summary))
        return table

    def image(self, path: Path, caption: str) -> None:
        """A figure: ``path`` is its PNG (embedded in the HTML); an SVG beside it with the same name is linked."""
        self.blocks.append(("image", Path(path), caption))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def figure_files(self) -> list[Path]:
        """Every figure file the document names: each PNG and the SVG beside it where there is one."""
        files = []
        for block in self.blocks:
            if block[0] == "image":
                files += [block[1]] + ([block[1].with_suffix(".svg")] if block[1].with_suffix(".svg").exists() else [])
        return files

    def to_markdown(self, relative_to: Path) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "paragraph":
                out += [block[1], ""]
            elif kind == "code":
                out += ([f"**{block[2]}**", ""] if block[2] else []) + ["```", block[1].rstrip("\n"), "```", ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                out += ([f"**{block[2]}**", ""] if block[2] else []) + block[1].markdown_lines() + [""]
            elif kind == "image":
                name = block[1].relative_to(relative_to).as_posix()
                out += [f"![{block[2]}]({name})", "", f"*{block[2]}*", ""]
        return "\n".join(out)

    def _contents(self) -> str:
        items = [
            f"<li><a href='#{anchor_of(b[2])}'>{html.escape(b[2])}</a></li>"
            for b in self.blocks if b[0] == "heading" and b[1] == 2
        ]
        return f"<nav><strong>Contents</strong><ol>{''.join(items)}</ol></nav>" if items else ""

    @staticmethod
    def _figure(path: Path, caption: str) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        svg = path.with_suffix(".svg")
        links = f"<a href='{html.escape(path.name)}'>{html.escape(path.name)}</a>"
        if svg.exists():
            links += f", <a href='{html.escape(svg.name)}'>{html.escape(svg.name)}</a>"
        return (
            f"<figure data-file='{html.escape(path.name)}'><img src='data:image/png;base64,{data}' "
            f"alt='{html.escape(caption)}'><figcaption>{html.escape(caption)} <span>[files: {links}]</span>"
            "</figcaption></figure>"
        )

    def _block_html(self, block: tuple) -> str:
        kind = block[0]
        if kind == "heading":
            return f"<h{block[1]} id='{anchor_of(block[2])}'>{html.escape(block[2])}</h{block[1]}>"
        if kind == "paragraph":
            return f"<p>{html.escape(block[1])}</p>"
        if kind == "code":
            pre = f"<pre>{html.escape(block[1])}</pre>"
            return f"<details><summary>{html.escape(block[2])}</summary>{pre}</details>" if block[2] else pre
        if kind == "bullets":
            return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>"
        if kind == "table":
            table = block[1].to_html()
            return f"<details><summary>{html.escape(block[2])}</summary>{table}</details>" if block[2] else table
        return self._figure(block[1], block[2])

    def to_html(self) -> str:
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            self._contents(),
        ]
        parts += [self._block_html(block) for block in self.blocks]
        parts.append("</body></html>")
        return "\n".join(parts)
