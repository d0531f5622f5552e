"""One document model for every page normlab writes: a run's report, a sweep's, the explanation.

A page is a title and sections of plain blocks (heading, paragraph, table, image, gallery,
code, table of contents, and Markdown that a generator already wrote, such as the explanation).
It is rendered twice: to Markdown that links the PNGs beside it, and to HTML that embeds them
as base64 data URIs with inline CSS, so each .html is one file that shows everything offline
(no CDN, no fonts or scripts from anywhere). Markdown text becomes HTML through markdown-it-py.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..storage import write_text

REPORT_MD, REPORT_HTML = "report.md", "report.html"


@dataclass
class Paragraph:
    text: str                          # Markdown inline: `code`, **bold**, [text](sibling.md)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)   # right-aligned columns


@dataclass
class Image:
    path: str                          # file name inside the page's folder
    alt: str


@dataclass
class Gallery:
    images: list[Image]                # shown side by side in HTML


@dataclass
class Code:
    text: str
    summary: str | None = None         # HTML: collapsed under this line


@dataclass
class Heading:
    text: str
    level: int = 3                     # sub-heading inside a section (## is the section's own)


@dataclass
class Markdown:
    text: str                          # a generated Markdown fragment, e.g. the explanation's


@dataclass
class Toc:
    """The page's sections as links (filled in when rendered)."""


@dataclass
class Section:
    title: str
    blocks: list

    @property
    def anchor(self) -> str:
        # GitHub's rule for heading ids, so the Markdown table of contents works there too.
        return re.sub(r"[^\w\- ]", "", self.title.lower()).replace(" ", "-")


@dataclass
class Page:
    title: str
    sections: list[Section]
    intro: list = field(default_factory=list)       # blocks under the title, before any section


# ---- Markdown -----------------------------------------------------------------------------

def md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def block_markdown(block, page: Page) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text, ""]
    if isinstance(block, Heading):
        return [f"{'#' * block.level} {block.text}", ""]
    if isinstance(block, Table):
        align = ["---:" if i in block.numeric else "---" for i in range(len(block.header))]
        rows = [block.header, align, *block.rows]
        return ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows] + [""]
    if isinstance(block, Image):
        return [f"![{block.alt}]({block.path})", ""]
    if isinstance(block, Gallery):
        return [" ".join(f'<img src="{i.path}" alt="{i.alt}" width="420">' for i in block.images), ""]
    if isinstance(block, Code):
        return ["```", block.text.rstrip("\n"), "```", ""]
    if isinstance(block, Markdown):
        return [block.text.strip("\n"), ""]
    if isinstance(block, Toc):
        return [f"- [{s.title}](#{s.anchor})" for s in page.sections] + [""]
    raise TypeError(f"no Markdown for {block!r}")


def to_markdown(page: Page) -> str:
    lines = [f"# {page.title}", ""]
    for block in page.intro:
        lines += block_markdown(block, page)
    for section in page.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += block_markdown(block, page)
    return "\n".join(lines)


# ---- HTML ---------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1a1a1a;
       max-width: 1180px; margin: 2em auto; padding: 0 1.2em; line-height: 1.5; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.08em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
img { max-width: 100%; height: auto; display: block; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
.gallery figure { margin: 0; width: calc(50% - 0.5em); max-width: 620px; min-width: 300px; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.82em; line-height: 1.3; }
details summary { cursor: pointer; color: #333; }
"""

NUM = ' class="num"'


@lru_cache(maxsize=1)
def markdown_it():
    from markdown_it import MarkdownIt
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def local_page(url: str) -> str | None:
    """A link to a page beside this one ('explain.md') points at its .html twin; others are None."""
    if "://" in url or url.startswith(("/", "#", "mailto:")) or "/" in url:
        return None
    return re.sub(r"\.md$", ".html", url)


def inline(text: str) -> str:
    """Markdown inline -> HTML. A link to a page beside this one stays a link (to its .html);
    any other address stays text beside its words: the page fetches nothing from outside."""
    def link(m: re.Match) -> str:
        target = local_page(m[2])
        return f"[{m[1]}]({target})" if target else f"{m[1]} ({m[2]})"     # commonmark links no bare address
    return markdown_it().renderInline(re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, text))


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_html(text: str, folder: Path) -> str:
    """A Markdown fragment as HTML, its images embedded and its local page links kept local."""
    md = markdown_it()
    tokens = md.parse(text)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image" and (folder / str(child.attrGet("src"))).is_file():
                child.attrSet("src", data_uri(folder / str(child.attrGet("src"))))
    html_text = md.renderer.render(tokens, md.options, {})
    return html_text.replace('style="text-align:right"', 'class="num"').replace('style="text-align:left"', "")


def block_html(block, page: Page, folder: Path) -> str:
    def img(image: Image) -> str:
        return f'<img src="{data_uri(folder / image.path)}" alt="{html.escape(image.alt)}">'

    if isinstance(block, Paragraph):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Heading):
        return f"<h{block.level}>{inline(block.text)}</h{block.level}>"
    if isinstance(block, Table):
        head = "".join(f"<th>{inline(h)}</th>" for h in block.header)
        rows = ["<tr>" + "".join(f"<td{NUM if i in block.numeric else ''}>{inline(c)}</td>" for i, c in enumerate(row))
                + "</tr>" for row in block.rows]
        return f"<table><thead><tr>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    if isinstance(block, Image):
        return f"<figure>{img(block)}</figure>"
    if isinstance(block, Gallery):
        return '<div class="gallery">' + "".join(f"<figure>{img(i)}</figure>" for i in block.images) + "</div>"
    if isinstance(block, Code):
        pre = f"<pre>{html.escape(block.text)}</pre>"
        return f"<details><summary>{html.escape(block.summary)}</summary>{pre}</details>" if block.summary else pre
    if isinstance(block, Markdown):
        return markdown_html(block.text, folder)
    if isinstance(block, Toc):
        items = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in page.sections)
        return f'<nav><ul>{items}</ul></nav>'
    raise TypeError(f"no HTML for {block!r}")


def to_html(page: Page, folder: Path) -> str:
    """The page as one self-contained HTML file; ``folder`` holds the images it embeds."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(page.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(page.title)}</h1>"]
    out += [block_html(b, page, folder) for b in page.intro]
    for section in page.sections:
        out.append(f'<h2 id="{section.anchor}">{html.escape(section.title)}</h2>')
        out += [block_html(b, page, folder) for b in section.blocks]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_page(page: Page, folder: Path, md_name: str = REPORT_MD, html_name: str = REPORT_HTML) -> list[Path]:
    """The page as md_name and html_name in ``folder`` (whose images the HTML embeds)."""
    write_text(folder / md_name, to_markdown(page))
    write_text(folder / html_name, to_html(page, folder))
    return [folder / md_name, folder / html_name]
