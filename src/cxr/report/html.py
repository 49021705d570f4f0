"""The HTML renderer: one self-contained page (inline CSS from report.css, figures as data URIs,
no URL of any kind).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from importlib.resources import files

from cxr.progress import Progress
from cxr.report.document import (
    MISSING,
    Bullets,
    Cell,
    Figure,
    Figures,
    Note,
    Paragraph,
    Section,
    Subheading,
    Table,
    Text,
)
from cxr.report.formatting import _figure_file, _figure_problem
from cxr.report.images import compact_figure

# The stylesheet lives beside this module as a plain CSS file (package data).
_CSS = "\n" + files("cxr.report").joinpath("report.css").read_text(encoding="utf-8")
_NUMERIC = re.compile(r"^[+\-−<]?\s?[\d.,]+(%| s| min| h|\b)")


def _render_html(title: str, generated, sections: list[Section],
                 progress: Callable[[str], None] | None = None) -> str:
    """The HTML page; ``progress`` (a line sink) hears how many figures are embedded so far:
    each is scaled and compressed, the slow part of the report."""
    done = Progress("report: figures embedded in the HTML", _figure_count(sections),
                    unit="figures", sink=progress)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           "<header>", f"<h1>{_esc(title)}</h1>"]
    if generated:
        out.append(f'<p class="generated">Generated {_esc(str(generated))}</p>')
    out.append("<nav><ol>" + "".join(f'<li><a href="#{s.id}">{_esc(s.title)}</a></li>'
                                     for s in sections) + "</ol></nav>")
    out += ["</header>", "<main>"]
    for section in sections:
        out.append(f'<section id="{section.id}">')
        out.append(f"<h2>{_esc(section.title)}</h2>")
        for block in section.blocks:
            out.append(_html_block(block))
            done.advance(_figure_count([block]))
        out.append("</section>")
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def _figure_count(blocks) -> int:
    """Figures in sections or blocks."""
    count = 0
    for block in blocks:
        if isinstance(block, Section):
            count += _figure_count(block.blocks)
        elif isinstance(block, Figure):
            count += 1
        elif isinstance(block, Figures):
            count += len(block.items)
    return count


def _html_block(block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_html_inline(block.parts)}</p>"
    if isinstance(block, Note):
        return f'<p class="note"><strong>Note:</strong> {_html_inline(block.parts)}</p>'
    if isinstance(block, Subheading):
        return f"<h3>{_esc(block.text)}</h3>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        return _html_figure(block)
    if isinstance(block, Figures):
        return ('<div class="figures">' + "".join(_html_figure(f) for f in block.items)
                + "</div>")
    raise TypeError(f"unknown block {type(block).__name__}")


def _html_table(table: Table) -> str:
    out = ['<div class="table-wrap"><table>']
    if table.caption:
        out.append(f"<caption>{_html_inline(table.caption)}</caption>")
    out.append("<thead>")
    if table.groups:
        out.append('<tr class="groups">' + "".join(
            f'<th colspan="{span}">{_esc(label)}</th>' for label, span in table.groups if span)
            + "</tr>")
    out.append("<tr>" + "".join(f'<th scope="col">{_esc(c)}</th>' for c in table.columns)
               + "</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for cell in row:
            cell = cell if isinstance(cell, Cell) else Cell(str(cell))
            text = _esc(cell.text).replace("\n", "<br>")
            text = f"<strong>{text}</strong>" if cell.bold else text
            kind = _cell_kind(cell.text)
            cells.append(f'<td class="{kind}">{text}</td>' if kind else f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody>")
    if table.footnotes:
        out.append("<tfoot>" + "".join(
            f'<tr><td colspan="{len(table.columns)}">{_html_inline(note)}</td></tr>'
            for note in table.footnotes) + "</tfoot>")
    out.append("</table></div>")
    return "".join(out)


def _cell_kind(text: str) -> str | None:
    """CSS class of a cell: numbers right-aligned, gaps and n/a muted, text as is."""
    if text == MISSING:
        return "missing"
    if text.startswith("n/a"):
        return "na"
    if _NUMERIC.match(text):
        return "num"
    return None


def _html_figure(figure: Figure) -> str:
    file = _figure_file(figure.path)
    if file is None:
        return f'<p class="note"><strong>Note:</strong> {_esc(_figure_problem(figure))}</p>'
    # scaled and compressed for the page (cxr.report.images); the figure file is left as it is
    compact = compact_figure(file.read_bytes())
    if compact is None:
        problem = f"Figure {figure.path} is not an image that can be read; not embedded."
        return f'<p class="note"><strong>Note:</strong> {_esc(problem)}</p>'
    mime, data = compact
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:{mime};base64,{encoded}" alt="{_esc(figure.caption)}">'
            f"<figcaption>{_esc(figure.caption)}</figcaption></figure>")


def _html_inline(parts) -> str:
    out = []
    for part in parts:
        if isinstance(part, Text):
            text = _esc(part.text)
            if part.code:
                text = f"<code>{text}</code>"
            out.append(f"<strong>{text}</strong>" if part.bold else text)
        else:
            out.append(_esc(str(part)))
    return "".join(out)


def _esc(text: str) -> str:
    """HTML-escaped text; "://" written with the colon as a reference (see module docstring)."""
    return html.escape(text, quote=True).replace("://", "&#58;//")
