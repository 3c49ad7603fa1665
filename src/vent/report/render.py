"""A tiny document model rendered to Markdown and to self-contained HTML (images embedded as base64).

Tables are :class:`vent.report.tables.Table` models; each output renders the same model (nothing is parsed back).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vent.report.tables import Table

__all__ = ["Document"]


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, table: Table | list[str], rows: list[list[Any]] | None = None) -> Table:
        """Add a :class:`Table` (or build one from a header and rows); returns it."""
        if not isinstance(table, Table):
            table = Table(list(table), rows or [])
        elif rows is not None:
            raise TypeError("Document.table: pass a Table, or a header and rows, not both")
        self.blocks.append(("table", table))
        return table

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("image", Path(path), caption))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def to_markdown(self, relative_to: Path) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "paragraph":
                out += [block[1], ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                out += block[1].markdown_lines() + [""]
            elif kind == "image":
                out += [f"![{block[2]}]({block[1].relative_to(relative_to).as_posix()})", "", f"*{block[2]}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
            "img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.85em;color:#555;margin-bottom:1.5em}"
            "code{background:#f5f5f5;padding:1px 3px}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "paragraph":
                parts.append(f"<p>{html.escape(block[1])}</p>")
            elif kind == "bullets":
                parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                parts.append(block[1].to_html())
            elif kind == "image":
                data = base64.b64encode(block[1].read_bytes()).decode()
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                    f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)
