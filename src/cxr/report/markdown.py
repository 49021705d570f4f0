"""The Markdown renderer: figures referenced by relative path."""

from __future__ import annotations

import html
import os
from pathlib import Path

from cxr.report.document import (
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

# ---------------------------------------------------------------------------------------------
# Markdown


def _render_markdown(title: str, generated, sections: list[Section], markdown_dir) -> str:
    lines = [f"# {_md(title)}", ""]
    if generated:
        lines += [f"Generated {_md(str(generated))}.", ""]
    lines += ["Contents: " + " · ".join(f"[{_md(s.title)}](#{s.id})" for s in sections), ""]
    for section in sections:
        lines += [f'<a id="{section.id}"></a>', "", f"## {_md(section.title)}", ""]
        for block in section.blocks:
            lines += _md_block(block, markdown_dir) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _md_block(block, markdown_dir) -> list[str]:
    if isinstance(block, Paragraph):
        return [_md_inline(block.parts)]
    if isinstance(block, Note):
        return ["> **Note:** " + _md_inline(block.parts)]
    if isinstance(block, Subheading):
        return [f"### {_md(block.text)}"]
    if isinstance(block, Bullets):
        return [f"- {_md_inline(item)}" for item in block.items]
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        return _md_figure(block, markdown_dir)
    if isinstance(block, Figures):
        lines: list[str] = []
        for figure in block.items:
            lines += _md_figure(figure, markdown_dir) + [""]
        return lines[:-1]
    raise TypeError(f"unknown block {type(block).__name__}")


def _md_table(table: Table) -> list[str]:
    lines = [_md_inline(table.caption), ""] if table.caption else []
    lines.append("| " + " | ".join(_md(column) for column in table.columns) + " |")
    lines.append("| --- " + "| ---: " * (len(table.columns) - 1) + "|")
    for row in table.rows:
        cells = []
        for cell in row:
            cell = cell if isinstance(cell, Cell) else Cell(str(cell))
            text = _md(cell.text)
            cells.append(f"**{text}**" if cell.bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    if table.footnotes:
        lines.append("")
        lines += [f"<sub>{_md_inline(note)}</sub><br>" for note in table.footnotes]
    return lines


def _md_figure(figure: Figure, markdown_dir) -> list[str]:
    if _figure_file(figure.path) is None:
        return ["> **Note:** " + _md(_figure_problem(figure))]
    target = str(figure.path)
    if markdown_dir is not None:
        target = os.path.relpath(Path(figure.path).resolve(), Path(markdown_dir).resolve())
    target = Path(target).as_posix().replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return [f"![{_md(figure.caption)}]({target})", "", f"*{_md(figure.caption)}*"]


def _md_inline(parts) -> str:
    out = []
    for part in parts:
        if isinstance(part, Text):
            if part.code:
                out.append(f"`{part.text.replace('`', '')}`")
            else:
                out.append(f"**{_md(part.text)}**" if part.bold else _md(part.text))
        else:
            out.append(_md(str(part)))
    return "".join(out)


def _md(text: str) -> str:
    """Markdown-safe text: HTML special characters escaped, table pipes escaped."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# HTML
