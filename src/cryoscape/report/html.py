"""Self-contained HTML reports: figures embedded as base64 PNG, no external files."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure

from cryoscape.io.atomic import write_text_atomic
from cryoscape.report.figures import figure_png_bytes

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; font-size: 0.9em; }
figure { margin: 0.5em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


@dataclass
class Section:
    """One titled part of a report: paragraphs, key/value tables and figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: list[tuple[str, str]] = field(default_factory=list)
    figures: list[tuple[Figure, str]] = field(default_factory=list)

    def to_html(self) -> str:
        parts = [f"<h2>{html.escape(self.title)}</h2>"]
        parts += [f"<p>{html.escape(p)}</p>" for p in self.paragraphs]
        if self.table:
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self.table)
            parts.append(f"<table>{rows}</table>")
        for fig, caption in self.figures:
            data = base64.b64encode(figure_png_bytes(fig)).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        return "\n".join(parts)


def render_report(title: str, sections: Sequence[Section]) -> str:
    """The whole report as one HTML string."""
    body = "\n".join(s.to_html() for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def write_report(path: str | Path, title: str, sections: Sequence[Section], force: bool = False) -> Path:
    """Write a self-contained report atomically and return its path."""
    return write_text_atomic(path, render_report(title, sections), force)
