"""report.md and report.html: the whole comparison on one page.

The page is built once as plain blocks (paragraph, table, image, code) and rendered twice: to
Markdown that links the PNGs beside it, and to HTML that embeds them as base64 data URIs with
inline CSS, so report.html is one self-contained file that shows everything offline (no CDN,
no fonts or scripts from anywhere).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..data import dataset_info
from .aggregate import VariantRuns, mean_std
from .curves import CURVES
from ..stats import fmt_p
from ..stats import spread as stats_spread
from .findings import pair_tests, run_findings
from .style import run_variants

EXPLAIN_FIGURE = "explain.png"

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SUMMARY = "summary.txt"


# ---- blocks -------------------------------------------------------------------------------

@dataclass
class Paragraph:
    text: str                          # Markdown-lite: `code` spans only


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)   # right-aligned columns


@dataclass
class Image:
    path: str                          # file name inside the run folder
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
class Section:
    title: str
    blocks: list


def markdown_section(text: str) -> Section:
    """A Section from Markdown that starts with its own heading, e.g. the explanation's.

    Understands the plain subset generated text uses (the project has no Markdown library):
    headings, paragraphs, pipe tables (``---:`` right-aligns), lines that are one image
    ``![alt](file in the run folder)``, and fenced code. Anything else stays a paragraph.
    """
    lines = text.strip("\n").splitlines()
    if not lines or not lines[0].startswith("#"):
        raise ValueError("markdown_section needs text that starts with a heading")
    title = lines[0].lstrip("#").strip()
    blocks: list = []
    paragraph: list[str] = []

    def flush():
        if paragraph:
            blocks.append(Paragraph(" ".join(paragraph)))
            paragraph.clear()

    i = 1
    while i < len(lines):
        line = lines[i].rstrip()
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", line.strip())
        if not line.strip():
            flush()
        elif line.startswith("```"):
            flush()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            blocks.append(Code("\n".join(lines[i + 1:end])))
            i = end
        elif line.startswith("#"):
            flush()
            blocks.append(Heading(line.lstrip("#").strip(), min(6, len(line) - len(line.lstrip("#")))))
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([cell.strip() for cell in lines[i].strip().strip("|").split("|")])
                i += 1
            i -= 1
            rule = rows[1] if len(rows) > 1 and all(re.fullmatch(r":?-+:?", c) for c in rows[1]) else None
            body = rows[2:] if rule else rows[1:]
            numeric = {k for k, c in enumerate(rule or []) if c.endswith(":")}
            blocks.append(Table(rows[0], body, numeric))
        elif image:
            flush()
            blocks.append(Image(image[2], image[1]))
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    return Section(title, blocks)


# ---- content ------------------------------------------------------------------------------

def spread(values: list[float], digits: int) -> str:
    """'92.31' for one value, '92.31 ± 0.12' (sample std) for several, '-' for none."""
    mean, std = mean_std(values)
    if not values:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def interval(values: list[float], digits: int) -> str:
    """The 95% t-interval of the mean, '-' where there is none (fewer than 2 values)."""
    s = stats_spread(values)
    return "-" if s.low is None else f"{s.low:.{digits}f} to {s.high:.{digits}f}"


def results_table(groups: list[VariantRuns]) -> Table:
    several = any(len(g.runs) > 1 for g in groups)
    header = ["variant", "seeds", "final test acc %"] + (["95% interval"] if several else []) + \
             ["best test acc %", "final test loss", "params", "wall time s", "status"]
    rows = []
    for g in groups:
        params = sorted(set(int(p) for p in g.values("params")))
        finished = len(g.done)
        seeds = str(len(g.runs)) if finished in (0, len(g.runs)) else f"{finished} of {len(g.runs)}"
        rows.append([f"`{g.variant}`", seeds, spread(g.final("test_acc"), 2)]
                    + ([interval(g.final("test_acc"), 2)] if several else [])
                    + [spread(g.final("best_test_acc"), 2), spread(g.final("test_loss"), 4),
                       ", ".join(f"{p:,}" for p in params) or "-",
                       spread([float(r["seconds"]) for r in g.runs if r.get("epochs")], 1), g.status_text()])
    return Table(header, rows, numeric=set(range(1, len(header) - 1)))


def table_note(groups: list[VariantRuns]) -> str:
    text = ("Accuracies in percent on the test set after the last epoch (final) and at the best epoch (best); "
            "wall time is the training time of one run, evaluation included.")
    if any(len(g.runs) > 1 for g in groups):
        text += (" With several seeds: mean ± sample standard deviation over the seeds that finished (\"2 of 3\": "
                 "one seed has not finished or diverged), and the 95% t-interval of the mean final test accuracy "
                 "(where the mean would land again, if the seeds are a fair sample of seeds); wall time over every seed.")
    return text


def significance_section(groups: list[VariantRuns]) -> Section | None:
    """Each pair of variants: is the gap in mean final test accuracy larger than seed-to-seed noise?"""
    tests = pair_tests(groups)
    if not tests or not any(len(g.final("test_acc")) > 1 for g in groups):
        return None
    rows = []
    for t in tests:
        rows.append([f"`{t.a}` vs `{t.b}`", f"{t.n_a}, {t.n_b}", f"{t.difference:+.2f}",
                     "-" if not t.tested else f"{t.low:+.2f} to {t.high:+.2f}",
                     "-" if not t.tested else fmt_p(t.p), "-" if not t.tested else fmt_p(t.p_holm), t.verdict])
    table = Table(["pair (higher mean first)", "seeds", "difference (points)", "bootstrap 95% interval",
                   "Welch p", "Holm p", "at 5%"], rows, numeric={1, 2, 3, 4, 5})
    family = max((t.family for t in tests), default=0)
    note = ("Final test accuracy of each pair of variants over their finished seeds. Welch's t-test (no assumption "
            "that the two variants vary equally from seed to seed) gives the p-value; Holm's correction adjusts "
            f"it for the {family} pairs tested at once, and a pair is significant when the adjusted p is below 0.05. "
            "The bootstrap interval resamples each variant's seeds; with 2-3 seeds it is rough and too narrow, so "
            "it shows the size of the gap, not the verdict. Not significant means these seeds cannot tell the two "
            "apart, not that they are equal.")
    untested = [t for t in tests if not t.tested]
    blocks = [table, Paragraph(note)]
    blocks += [Paragraph(t.sentence()) for t in untested]
    return Section("Are the differences real?", blocks)


def setup_paragraph(run) -> Paragraph:
    cfg, res = run.config, run.results
    info = dataset_info(run.dataset)
    seeds = cfg.get("seeds", 1)
    first = cfg.get("seed", 1)
    seed_text = f"seed {first}" if seeds == 1 else f"seeds {first}-{first + seeds - 1}"
    lr = cfg.get("lr") or {"sgd": 0.1, "adamw": 0.004}.get(cfg.get("optimizer"), "default")
    sizes = (cfg.get("train_size"), cfg.get("test_size"))
    data = info.title
    if all(isinstance(n, int) for n in sizes):
        data += f": {sizes[0]:,} training and {sizes[1]:,} test images"
    parts = [
        data,
        f"{cfg.get('epochs', '?')} epochs, batch {cfg.get('batch_size', '?')}",
        f"{cfg.get('optimizer', '?')} (peak lr {lr}, {cfg.get('schedule', '?')} schedule, "
        f"weight decay {cfg.get('weight_decay', '?')})",
        seed_text,
        f"device {res.get('device_name') or res.get('device', '?')}",
        f"normlab {res.get('normlab', '?')}, torch {res.get('torch', '?')}",
    ]
    when = res.get("started", "")
    if res.get("finished"):
        when += f" to {res['finished']}"
    return Paragraph("; ".join(str(p) for p in parts) + (f". Run {when}." if when else "."))


def explanation_section(run) -> Section:
    """"How each normalization computes its statistics": the worked example checked against
    PyTorch, and the table for this run's own net at its batch size (normlab.explain). Its
    figure, EXPLAIN_FIGURE, is written by build.write_report with the other figures."""
    from ..explain import explanation_markdown
    return markdown_section(explanation_markdown(run.dataset, run_variants(run), run.config["batch_size"],
                                                 figure=EXPLAIN_FIGURE))


def build_sections(run, groups: list[VariantRuns], grids: dict[str, Path], summary: str | None,
                   summary_rows: list[dict]) -> list[Section]:
    sections = [
        Section("Setup", [setup_paragraph(run)]),
        Section("Results", [results_table(groups), Paragraph(table_note(groups))]),
        Section("Findings", [Paragraph(text) for text in run_findings(run)]),
    ]
    significance = significance_section(groups)
    if significance is not None:
        sections.insert(3, significance)     # after the findings that cite it
    if (run.folder / CURVES).exists():
        sections.append(Section("Loss and accuracy per epoch", [Image(CURVES, "loss and accuracy per epoch")]))
    grid_blocks: list = []
    if grids:
        grid_blocks.append(Paragraph("For each variant, the 10 test images its model (first seed) got wrong with the "
                                     "highest confidence: predicted / true class and the model's confidence. "
                                     "`misclassified.json` lists their test-set indices."))
        grid_blocks.append(Gallery([Image(path.name, f"misclassified by {v}") for v, path in grids.items()]))
    unfinished = [g.variant for g in groups if g.variant not in grids and not g.done]
    orphans = [g.variant for g in groups if g.variant not in grids and g.done]
    names = lambda vs: ", ".join(f"`{v}`" for v in vs)
    if unfinished:
        grid_blocks.append(Paragraph(f"No grid for {names(unfinished)}: "
                                     + ("its run" if len(unfinished) == 1 else "their runs") + " did not finish."))
    if orphans:
        grid_blocks.append(Paragraph(f"No grid for {names(orphans)}: no misclassified images saved and no checkpoint "
                                     f"to recompute them from."))
    sections.append(Section("Most confidently wrong test images", grid_blocks))
    sections.append(explanation_section(run))
    if summary_rows:
        table = Table(["variant", "params", "in norm layers", "norm share"],
                      [[f"`{r['variant']}`", f"{r['params']:,}", f"{r['norm_params']:,}", f"{100 * r['norm_share']:.1f}%"]
                       for r in summary_rows], numeric={1, 2, 3})
        blocks = [Paragraph("Parameters of each variant's net and how many of them sit in its normalization "
                            "layers (torchinfo; the full layer tables are in `summary.txt`)."), table]
        if summary:
            blocks.append(Code(summary, summary="layer tables (summary.txt)"))
        sections.append(Section("Parameters", blocks))
    return sections


def page_title(run, groups: list[VariantRuns]) -> str:
    return f"normlab report: {dataset_info(run.dataset).title}, " + ", ".join(g.variant for g in groups)


# ---- rendering ----------------------------------------------------------------------------

def md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines += [block.text, ""]
            elif isinstance(block, Heading):
                lines += [f"{'#' * block.level} {block.text}", ""]
            elif isinstance(block, Table):
                align = ["---:" if i in block.numeric else "---" for i in range(len(block.header))]
                lines.append("| " + " | ".join(md_cell(h) for h in block.header) + " |")
                lines.append("| " + " | ".join(align) + " |")
                lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            elif isinstance(block, Image):
                lines += [f"![{block.alt}]({block.path})", ""]
            elif isinstance(block, Gallery):
                lines += [" ".join(f'<img src="{i.path}" alt="{i.alt}" width="420">' for i in block.images), ""]
            elif isinstance(block, Code):
                lines += ["```", block.text.rstrip("\n"), "```", ""]
    return "\n".join(lines)


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


def inline(text: str) -> str:
    """Escape for HTML, then `code` -> <code> and **bold** -> <strong>. A Markdown link
    [text](url) stays text with its address beside it: the page links to nothing outside."""
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"\1 (\2)", text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(title: str, sections: list[Section], folder: Path) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(title)}</h1>"]

    def img(image: Image) -> str:
        return f'<img src="{data_uri(folder / image.path)}" alt="{html.escape(image.alt)}">'

    for section in sections:
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out.append(f"<p>{inline(block.text)}</p>")
            elif isinstance(block, Heading):
                out.append(f"<h{block.level}>{inline(block.text)}</h{block.level}>")
            elif isinstance(block, Table):
                out.append("<table><thead><tr>" + "".join(f"<th>{inline(h)}</th>" for h in block.header) + "</tr></thead><tbody>")
                for row in block.rows:
                    cells = [f"<td{NUM if i in block.numeric else ''}>{inline(c)}</td>" for i, c in enumerate(row)]
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</tbody></table>")
            elif isinstance(block, Image):
                out.append(f"<figure>{img(block)}</figure>")
            elif isinstance(block, Gallery):
                out.append('<div class="gallery">' + "".join(f"<figure>{img(i)}</figure>" for i in block.images) + "</div>")
            elif isinstance(block, Code):
                pre = f"<pre>{html.escape(block.text)}</pre>"
                out.append(f"<details><summary>{html.escape(block.summary)}</summary>{pre}</details>" if block.summary else pre)
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
