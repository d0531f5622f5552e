"""An Explanation as text (a worked spreadsheet for the terminal) and as a markdown section."""

from __future__ import annotations

import textwrap

import numpy as np

from . import practice, stats
from .stats import EPS

FORMULA = "y = (x - mean) / sqrt(var + eps) * weight + bias"
WS_NOTE = ("Qiao et al. 2019: with GroupNorm it matches BatchNorm at large batches and beats it at 1-2 images "
           "per GPU; it normalizes weights, not activations, so it never depends on the batch.")
MAX_LISTED = 24  # values listed per statistic in text; --json has them all
WIDTH = 110


def num(v: float) -> str:
    """Exact where it can be, spreadsheet precision otherwise: 4.5, 5.25, 104.917."""
    return f"{v:.6g}"


def wrap(text: str, indent: str = "  ", hang: str = "    ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=hang, break_on_hyphens=False)


def summary_rows(e) -> list[dict]:
    n, c, h, w = e.shape.dims
    rows = []
    for norm in e.worked:
        lay = stats.layout(norm, n, c, h, w, e.shape.groups)
        count_rule, each_rule = stats.symbolic(norm)
        rows.append({"norm": f"{stats.title(norm)} ({norm})", "per": stats.per_text(norm), "over": stats.axes_note(norm),
                     "count": f"{count_rule} = {lay['count']}", "each": f"{each_rule} = {lay['values_each']}",
                     "params": f"{stats.facts(norm).params_rule} = {stats.params(norm, c, h, w)}"})
    return rows


def practice_notes(e) -> dict[str, str]:
    """The GN paper's notes for bn, ln, gn, in; every other norm's from its registry facts."""
    notes = practice.notes(e.batch_dependence, e.checks["bn"]["eval"]["max_abs_change_vs_training"])
    return {norm: notes.get(norm) or stats.facts(norm).note for norm in e.worked}


def unknown_lines() -> list[str]:
    return [f"{name}: explain does not know this norm (it was registered without explain facts), so it is not "
            "worked here" for name in stats.unknown()]


def grid(a: np.ndarray, fmt, indent: str = "  ", rows: str = "sample", columns: str = "channel") -> list[str]:
    """N x C x H x W as text: one block of H rows per sample, the channels side by side."""
    n_, c_, h_, w_ = a.shape
    cells = [[[" ".join(fmt(a[n, c, h, w]) for w in range(w_)) for h in range(h_)] for c in range(c_)] for n in range(n_)]
    width = max(max(len(row) for row in block) for sample in cells for block in sample)
    width = max(width, len(f"{columns} {c_ - 1}"))
    label = len(f"{rows} {n_ - 1}")
    lines = [indent + " " * label + "   " + "   ".join(f"{columns} {c}".ljust(width) for c in range(c_))]
    for n in range(n_):
        for h in range(h_):
            name = f"{rows} {n}" if h == 0 else ""
            lines.append(indent + name.ljust(label) + "   " + "   ".join(cells[n][c][h].rjust(width) for c in range(c_)))
    return [line.rstrip() for line in lines]


def integer(v: float) -> str:
    return str(int(v))


def fixed(v: float) -> str:
    return f"{v:7.3f}"


def values_text(s: stats.Statistic, per_plane: int, sep: str = " | ") -> str:
    """The values plane by plane (``sep`` between planes), cut after MAX_LISTED."""
    shown = s.values[:MAX_LISTED]
    text = sep.join(" ".join(integer(v) for v in shown[i:i + per_plane]) for i in range(0, len(shown), per_plane))
    return text if len(shown) == len(s.values) else f"{text} ... ({len(s.values)} values)"


def to_text(e) -> str:
    n, c, h, w = e.shape.dims
    g = e.shape.groups
    out = [f"normlab explain: how {', '.join(stats.title(norm) for norm in e.worked)} compute their statistics",
           "",
           *wrap(f"Input x: N={n} samples x C={c} channels x H={h} x W={w} pixels, integers {stats.INPUT_RANGE[0]}-"
                 f"{stats.INPUT_RANGE[1] - 1} drawn with seed {e.seed}; GroupNorm uses G={g} groups of C/G={c // g} "
                 "channels.", "", "  "),
           *grid(e.input, integer),
           "",
           f"BatchNorm, LayerNorm, GroupNorm and InstanceNorm compute  {FORMULA}  with their own mean and var:",
           "  var is the biased variance sum((x - mean)^2) / m over the m values that share the mean (what PyTorch",
           f"  normalizes with); eps = {EPS:g}; weight = 1 and bias = 0 (PyTorch's initial values), so y is x normalized.",
           "  BatchNorm's running_var is updated with the unbiased variance sum((x - mean)^2) / (m - 1).",
           ""]
    rows = summary_rows(e)
    heads = {"norm": "norm", "per": "one mean per", "over": "averages over", "count": "means", "each": "values each",
             "params": "params"}
    widths = {k: max(len(heads[k]), *(len(r[k]) for r in rows)) for k in heads}
    out.append(("  " + "  ".join(heads[k].ljust(widths[k]) for k in heads)).rstrip())
    out += ["  " + "  ".join(r[k].ljust(widths[k]) for k in heads).rstrip() for r in rows]
    ln_elem = e.per_element_ln
    out += wrap(f"(nn.LayerNorm([C, H, W]) computes LayerNorm's statistics but has a weight and bias per element: "
                f"2*C*H*W = {ln_elem['params']} parameters)", "  ", "   ")
    notes = practice_notes(e)
    for norm, worked in e.worked.items():
        check, facts = e.checks[norm], stats.facts(norm)
        lay = stats.layout(norm, n, c, h, w, g)
        out += ["", f"== {stats.title(norm)} ({norm}): one mean and variance per {stats.per_text(norm)}, over "
                    f"{stats.axes_note(norm)}: {lay['count']} of each, {lay['values_each']} values each =="]
        for s in worked.stats:
            m = len(s.values)
            out.append(f"  {s.label}: {values_text(s, h * w)}")
            out.append(f"      mean = {num(s.total)}/{m} = {num(s.mean)}   var = {num(s.squared_deviations)}/{m} = "
                       f"{num(s.var)}   sqrt(var + eps) = {num(s.std)}   mean(x^2) = {num(s.mean_square)}")
        out += wrap(f"output {facts.formula}:")
        out += grid(worked.output, fixed)
        out.append(f"  learnable parameters: {stats.params(norm, c, h, w)} ({facts.params_rule})"
                   + ("; running_mean and running_var are buffers, not parameters" if norm == "bn" else ""))
        out += wrap(f"checked: PyTorch {check['torch_layer']} from make_norm({check['variant']!r}), training mode, "
                    f"float64: largest |difference| {check['max_abs_diff_vs_torch']:.2g}; parameters {check['params_torch']}")
        if norm == "bn":
            r = check["running"]
            out.append(f"  running estimates after this step (momentum {r['momentum']:g}, from mean 0 and var 1):")
            out.append("    running_mean = 0.9*0 + 0.1*mean = " + ", ".join(num(v) for v in r["running_mean"]))
            out.append("    running_var = 0.9*1 + 0.1*unbiased var (" + ", ".join(
                f"{num(s.squared_deviations)}/{len(s.values) - 1}" for s in worked.stats) + ") = "
                + ", ".join(num(v) for v in r["running_var"]))
            out.append(f"    PyTorch's running_mean and running_var: largest |difference| {r['max_abs_diff_vs_torch']:.2g}")
            ev = check["eval"]
            out += wrap(f"evaluation mode normalizes with the running estimates instead, which one step moves only "
                        f"{r['momentum']:.0%} of the way from 0 and 1 toward the batch's: the output changes by up to "
                        f"{ev['max_abs_change_vs_training']:.3g} (PyTorch in eval mode agrees to {ev['max_abs_diff_vs_torch']:.2g})")
        if norm == "ln":
            out.append(f"  nn.LayerNorm([{c}, {h}, {w}]) from make_norm('ln-elem'): same output to "
                       f"{ln_elem['max_abs_diff_vs_torch']:.2g}, with {ln_elem['params_torch']} parameters instead of "
                       f"{stats.params('ln', c, h, w)}")
        out += wrap(f"in practice: {notes[norm]}")
    kernel, ws, ws_check = e.ws
    out += ["", f"== Weight Standardization (+ws, e.g. gn:8+ws): each conv kernel per output channel, over its "
                f"{kernel[0].size} weights (in, kh, kw), before the convolution =="]
    out += [f"  {s.label}: {values_text(s, kernel.shape[2] * kernel.shape[3])}\n      mean = {num(s.mean)}   "
            f"var = {num(s.var)}   sqrt(var + eps) = {num(s.std)}" for s in ws.stats]
    out += ["  standardized kernel (W - mean) / sqrt(var + eps):", *grid(ws.output, fixed, rows="out", columns="in")]
    out += wrap(f"checked: {ws_check['torch_layer']} on x (padding 1) against a plain convolution with this kernel: "
                f"largest |difference| {ws_check['max_abs_diff_vs_torch']:.2g}. {WS_NOTE}")
    out += [""] + [line for text in unknown_lines() for line in wrap(text, "", "  ")]
    out += wrap(practice.citation(), "", "  ")
    return "\n".join(out) + "\n"


def command_line(e) -> str:
    """The `normlab explain` call that prints this explanation."""
    default = stats.Shape()
    flags = [f"--{name} {value}" for name, value, usual in zip(
        ("batch", "channels", "height", "width", "groups"),
        (*e.shape.dims, e.shape.groups), (*default.dims, default.groups)) if value != usual]
    return " ".join(["normlab explain", *flags, f"--seed {e.seed}"])


def md_grid(a: np.ndarray, fmt) -> list[str]:
    """N x C x H x W as a table: a row per sample, a cell per channel with its rows split by '/'."""
    n_, c_, h_, w_ = a.shape
    lines = ["| | " + " | ".join(f"channel {c}" for c in range(c_)) + " |", "|---" * (c_ + 1) + "|"]
    for n in range(n_):
        cells = [" / ".join(" ".join(fmt(a[n, c, h, w]) for w in range(w_)) for h in range(h_)) for c in range(c_)]
        lines.append(f"| sample {n} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(e, level: int = 2, figure: str | None = None) -> str:
    n, c, h, w = e.shape.dims
    g = e.shape.groups
    hx, hy = "#" * level, "#" * (level + 1)
    notes = practice_notes(e)
    out = [f"{hx} How each normalization computes its statistics", "",
           f"A worked example, computed step by step as one would by hand: a batch of N={n} inputs with C={c} channels of "
           f"H x W = {h} x {w} pixels, integers drawn with seed {e.seed} (`{command_line(e)}` prints "
           f"it; GroupNorm with G={g} groups). BatchNorm, LayerNorm, GroupNorm and InstanceNorm compute `{FORMULA}`; "
           f"they differ only in which values share a mean and variance. `var` is the biased variance `sum((x - mean)^2) / m` (what PyTorch "
           f"normalizes with), eps = {EPS:g}, weight = 1 and bias = 0 (PyTorch's initial values). BatchNorm's "
           f"running estimate uses the unbiased variance `sum((x - mean)^2) / (m - 1)`.", ""]
    if figure:
        out += [f"![The values that share one mean and variance under each norm, over the (N, C, H*W) cube]({figure})", ""]
    out += ["Input x:", "", *md_grid(e.input, lambda v: str(int(v))), "",
           "| norm | one mean per | averages over | means | values each | params |", "|---|---|---|---|---|---|"]
    out += [f"| {r['norm']} | {r['per']} | {r['over']} | {r['count']} | {r['each']} | {r['params']} |" for r in summary_rows(e)]
    ln_elem = e.per_element_ln
    out += ["", f"`nn.LayerNorm([C, H, W])` (`ln-elem`) computes LayerNorm's statistics with a weight and bias per "
                f"element: 2·C·H·W = {ln_elem['params']} parameters instead of {stats.params('ln', c, h, w)}.", ""]
    for norm, worked in e.worked.items():
        check = e.checks[norm]
        lay = stats.layout(norm, n, c, h, w, g)
        out += [f"{hy} {stats.title(norm)} (`{norm}`)", "",
                f"One mean and variance per {stats.per_text(norm)}, over {stats.axes_note(norm)}: "
                f"{lay['count']} of each, over {lay['values_each']} values each; `{stats.facts(norm).formula}`.", "",
                "| statistic | values | mean | var |", "|---|---|---:|---:|"]
        out += [f"| {s.label} | {values_text(s, h * w, '; ')} | {num(s.mean)} | {num(s.var)} |" for s in worked.stats]
        out += ["", "Output y:", "", *md_grid(worked.output, lambda v: f"{v:.3f}"), ""]
        checked = (f"Checked: PyTorch `{check['torch_layer']}` built by `make_norm({check['variant']!r})`, training "
                   f"mode, float64, differs from this by at most {check['max_abs_diff_vs_torch']:.2g}.")
        if norm == "bn":
            r, ev = check["running"], check["eval"]
            checked += (f" Its running_var after this step, 0.9·1 + 0.1·(unbiased var) = "
                        f"{', '.join(num(v) for v in r['running_var'])}, matches to {r['max_abs_diff_vs_torch']:.2g}; "
                        f"in evaluation mode it normalizes with these instead and the output moves by up to "
                        f"{ev['max_abs_change_vs_training']:.3g}.")
        out += [checked, "", f"In practice: {notes[norm]}", ""]
    kernel, ws, ws_check = e.ws
    out += [f"{hy} Weight Standardization (`+ws`)", "",
            f"A modifier, not a norm (`gn:8+ws`): each output channel's conv kernel is standardized over its "
            f"{kernel[0].size} weights (in, kh, kw) before the convolution. A kernel drawn with seed {e.seed} + 2:", "",
            "| statistic | values | mean | var |", "|---|---|---:|---:|"]
    out += [f"| {s.label} | {values_text(s, kernel.shape[2] * kernel.shape[3], '; ')} | {num(s.mean)} | {num(s.var)} |"
            for s in ws.stats]
    out += ["", f"Checked: `{ws_check['torch_layer']}` on x (padding 1) differs from a plain convolution with the "
                f"kernel standardized here by at most {ws_check['max_abs_diff_vs_torch']:.2g}. {WS_NOTE}", ""]
    out += [text for line in unknown_lines() for text in (f"{line}.", "")] + [practice.citation(), ""]
    return "\n".join(out)
