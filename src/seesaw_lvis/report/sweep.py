"""``python -m seesaw_lvis sweep-report``: the Seesaw (p, q) grid (:mod:`seesaw_lvis.sweep`),
from the evaluation files of its cells only.

Per cell and metric (0-100): the mean over the sweep's seeds with a percentile bootstrap
interval of that mean (val images and seeds resampled, :func:`effects.mean_interval`), and the
paired difference against the grid's control p = q = 0 (:func:`effects.paired_difference`:
the same resamples and seeds for both cells). Writes

* ``tables/sweep.{md,csv,tex}``: one line per (p, q); the CSV has every metric's mean, std,
  ci_low, ci_high and n_seeds and its difference from the control with its interval;
* ``figures/sweep_heatmaps.{png,svg}``: mean APr and mean mask AP over the grid, each cell
  annotated with its mean and CI half-width;
* ``figures/sweep_marginals.{png,svg}``: APr and mask AP against p at the row's own q, and
  against q at its own p (the paper's q = 2 and p = 0.8), with their intervals.

Cells not evaluated yet are "not run" in the table and grey in the figures.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seesaw_lvis import sweep
from seesaw_lvis.io import write_text
from seesaw_lvis.report import effects, plots, style, tables

log = logging.getLogger(__name__)

TABLE_EXTS = ("md", "csv", "tex")
FIGURES = ("sweep_heatmaps", "sweep_marginals")
# The grid's headline metrics (heatmaps, curves, the markdown table), of effects.METRICS.
SHOWN = (("APr", "APr (mask)"), ("mask_AP", "mask AP"))
CAPTIONS = {"tables/sweep.csv": "sweep_table", "figures/sweep_heatmaps.png": "sweep_heatmaps",
            "figures/sweep_marginals.png": "sweep_marginals"}


def inputs(params: Mapping[str, Any]) -> list[str]:
    """The metrics.json and matches files of every (cell, seed)."""
    cp = sweep.with_cells(params)
    found = []
    for cell in sweep.cells(params):
        for seed in sweep.seeds(params):
            found.append(str(tables.metrics_path(cp, cell.row_id, seed)))
            found += [str(p) for p in tables.match_paths(cp, cell.row_id, seed).values()]
    return found


def outputs(params: Mapping[str, Any]) -> list[str]:
    rep = params["paths"]["reports"]
    return [*(f"{rep}/tables/sweep.{ext}" for ext in TABLE_EXTS),
            *(f"{rep}/figures/{name}.{ext}" for name in FIGURES for ext in ("png", "svg"))]


def captions(params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    rep = params["paths"]["reports"]
    return {f"{rep}/{name}": {"caption": f"workflow/report/{stem}.rst", "category": "Ablation"}
            for name, stem in CAPTIONS.items()}


def build(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per cell: {cell, result (tables.RowResult), metrics, difference}."""
    cp = sweep.with_cells(params)
    cells = sweep.cells(params)
    results = [tables.load_row(cp, c.row_id, cp["rows"][c.row_id], sweep.seeds(params)) for c in cells]
    control = sweep.control(params)
    ref = cells.index(control) if control is not None else None

    def matches(row_id: str, seed: int) -> dict[str, Path] | None:
        files = tables.match_paths(cp, row_id, seed)
        return files if all(f.is_file() for f in files.values()) else None

    found = effects.row_effects(results, lambda i: ref if ref is not None and i != ref else None, matches,
                                params["report"])
    return [{"cell": c, "result": r, **found[r.row]} for c, r in zip(cells, results)]


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def _interval(estimate: Mapping[str, Any] | None, signed: bool = False) -> str:
    """An effects.json estimate ({mean, ci_low, ci_high}) as a table cell."""
    if not estimate:
        return tables.DASH
    ci = (estimate["ci_low"], estimate["ci_high"]) if estimate.get("ci_low") is not None else None
    return tables.interval_cell(estimate.get("mean"), ci, signed)


def _level(params: Mapping[str, Any]) -> str:
    return f"{params['report']['ci_level']:.0%} CI"


def own_factors(params: Mapping[str, Any]) -> tuple[float, float]:
    """(p, q) of the sweep row as it resolves (the curves' slices), from its config."""
    from seesaw_lvis.configs import resolve

    row = sweep.base_row(params)
    found = resolve.seesaw_factors_of(resolve.load(params, row))
    if found is None:
        raise ValueError(f"params sweep.row: row '{row}' resolves to no Seesaw loss")
    return found


def _heads(params: Mapping[str, Any]) -> list[str]:
    return ["p", "q", "seeds", *(f"{label} [{_level(params)}]" for _, label in SHOWN),
            *(f"{label} vs p=q=0 [{_level(params)}]" for _, label in SHOWN), "note"]


def to_rows(built: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for e in built:
        c, r = e["cell"], e["result"]
        if r.status != tables.OK:
            out.append([f"{c.p:g}", f"{c.q:g}", tables.DASH, r.status, *[tables.DASH] * (2 * len(SHOWN) - 1),
                        r.note])
            continue
        out.append([f"{c.p:g}", f"{c.q:g}", str(r.n_seeds), *(_interval(e["metrics"].get(m)) for m, _ in SHOWN),
                    *(_interval(e["difference"].get(m), signed=True) for m, _ in SHOWN), r.note])
    return out


def caption(params: Mapping[str, Any], built: list[dict[str, Any]]) -> str:
    row = sweep.base_row(params)
    own = own_factors(params)
    spec = params["report"]
    n = len(sweep.seeds(params))
    resampled = "val images and the seeds" if n > 1 else "val images only (one seed: seed-to-seed spread not in it)"
    return (f"Seesaw ablation grid on row {row} ({params['rows'][row]['title']}, whose own factors are p={own[0]:g}, "
            f"q={own[1]:g}), dataset {params['dataset']}, scale {params['scale']}, seeds {sweep.seeds(params)}. "
            f"Mean over seeds (0-100) with a {spec['ci_level']:.0%} percentile bootstrap interval "
            f"({spec['bootstrap_samples']} resamples of {resampled}); 'vs p=q=0': the paired difference from the "
            "grid's control (softmax CE with the same normalised classifier and objectness branch).")


def to_markdown(params: Mapping[str, Any], built: list[dict[str, Any]]) -> str:
    heads = _heads(params)
    lines = [f"# Seesaw ablation grid: {params['rows'][sweep.base_row(params)]['title']}", "",
             caption(params, built), "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(r) + " |" for r in to_rows(built)]
    return "\n".join(lines) + "\n"


def to_latex(params: Mapping[str, Any], built: list[dict[str, Any]]) -> str:
    heads = _heads(params)
    lines = ["% " + caption(params, built), "\\begin{tabular}{" + "r" * len(heads) + "}", "\\toprule",
             " & ".join(tables.tex_escape(h) for h in heads) + " \\\\", "\\midrule"]
    lines += [" & ".join(tables.tex_escape(v) for v in r) + " \\\\" for r in to_rows(built)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(params: Mapping[str, Any], built: list[dict[str, Any]]) -> str:
    names = [m for m, *_ in effects.EFFECT_METRICS]
    fields = ["p", "q", "row", "status", "note", "n_seeds", "seeds"]
    for m in names:
        fields += [f"{m}_mean", f"{m}_std", f"{m}_ci_low", f"{m}_ci_high", f"{m}_val_se"]
    for m in names:
        fields += [f"{m}_vs_control_mean", f"{m}_vs_control_ci_low", f"{m}_vs_control_ci_high"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for e in built:
        c, r = e["cell"], e["result"]
        line: dict[str, Any] = {"p": f"{c.p:g}", "q": f"{c.q:g}", "row": r.row, "status": r.status, "note": r.note,
                                "n_seeds": r.n_seeds, "seeds": " ".join(map(str, sorted(r.seed_values)))}
        for m in names:
            s = e["metrics"].get(m, {}) if r.status == tables.OK else {}
            for k in ("mean", "std", "ci_low", "ci_high", "val_se"):
                line[f"{m}_{k}"] = s.get(k)
            d = e["difference"].get(m) or {}
            for k in ("mean", "ci_low", "ci_high"):
                line[f"{m}_vs_control_{k}"] = d.get(k)
        w.writerow({k: "" if v is None else (round(v, 4) if isinstance(v, float) else v) for k, v in line.items()})
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def _stat(e: Mapping[str, Any], m: str) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of a cell's metric, nan where missing."""
    s = e["metrics"].get(m) if e["result"].status == tables.OK else None
    get = lambda k: np.nan if not s or s.get(k) is None else float(s[k])  # noqa: E731
    return get("mean"), get("ci_low"), get("ci_high")


def heatmaps(params: Mapping[str, Any], built: list[dict[str, Any]], png: Path, svg: Path) -> list[Path]:
    plt = plots._plt()
    grid = params["sweep"]["grid"][params["scale"]]
    ps, qs = [float(p) for p in grid["p"]], [float(q) for q in grid["q"]]
    by = {(e["cell"].p, e["cell"].q): e for e in built}
    with plt.rc_context(style.RC):
        fig, axes = plt.subplots(1, len(SHOWN), figsize=(5.2 * len(SHOWN), 4.6), squeeze=False)
        for ax, (m, label) in zip(axes[0], SHOWN):
            vals = np.full((len(qs), len(ps)), np.nan)
            for i, q in enumerate(qs):
                for j, p in enumerate(ps):
                    vals[i, j] = _stat(by[p, q], m)[0]
            shown = np.ma.masked_invalid(vals)
            cmap = plt.get_cmap(style.HEATMAP_CMAP).copy()
            cmap.set_bad(style.MISSING_COLOUR)
            im = ax.imshow(shown, origin="lower", cmap=cmap, aspect="auto")
            fig.colorbar(im, ax=ax, label=f"{label}, mean over seeds (%)")
            finite = vals[np.isfinite(vals)]
            mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
            for i, q in enumerate(qs):
                for j, p in enumerate(ps):
                    mean, lo, hi = _stat(by[p, q], m)
                    if np.isnan(mean):
                        text, colour = "not run", "white"
                    else:
                        half = f"\n±{(hi - lo) / 2:.1f}" if np.isfinite(lo) else ""
                        text, colour = f"{mean:.1f}{half}", "black" if mean > mid else "white"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
            ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps])
            ax.set_yticks(range(len(qs)), [f"{q:g}" for q in qs])
            ax.set_xlabel("p (mitigation factor)")
            ax.set_ylabel("q (compensation factor)")
            ax.set_title(f"{label}: mean ± half-width of its {_level(params)}")
            if not finite.size:
                plots.no_data(ax, "no data: no cell of the grid evaluated yet", "sweep_heatmaps")
        fig.suptitle(f"Seesaw (p, q) grid, {params['dataset']} at scale {params['scale']}, seeds "
                     f"{sweep.seeds(params)}", fontsize=11)
        fig.tight_layout()
        return plots.save(fig, png, svg)


def marginals(params: Mapping[str, Any], built: list[dict[str, Any]], png: Path, svg: Path) -> list[Path]:
    """APr and mask AP against p at the row's own q, and against q at its own p."""
    plt = plots._plt()
    p0, q0 = own_factors(params)
    slices = (("p", f"q = {q0:g}", sorted((e for e in built if e["cell"].q == q0), key=lambda e: e["cell"].p)),
              ("q", f"p = {p0:g}", sorted((e for e in built if e["cell"].p == p0), key=lambda e: e["cell"].q)))
    markers = {"APr": "o", "mask_AP": "s"}
    colours = {"APr": style.GROUP_COLOURS["r"], "mask_AP": style.OKABE_ITO["black"]}
    with plt.rc_context(style.RC):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
        for ax, (axis, fixed, entries) in zip(axes, slices):
            if not entries:
                plots.no_data(ax, f"no data: the grid has no cell with {fixed}", "sweep_marginals")
            for m, label in SHOWN:
                x = np.array([getattr(e["cell"], axis) for e in entries], float)
                stats = np.array([_stat(e, m) for e in entries], float).reshape(-1, 3)
                mean, lo, hi = stats.T
                err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
                ax.errorbar(x, mean, yerr=err, marker=markers[m], color=colours[m], capsize=4, linewidth=1.6,
                            label=f"{label} (bars: {_level(params)})")
            if entries:
                ax.set_xticks(sorted({getattr(e["cell"], axis) for e in entries}))
            if entries and all(e["result"].status != tables.OK for e in entries):
                plots.no_data(ax, f"no data: no cell with {fixed} evaluated yet", "sweep_marginals")
            ax.set_xlabel(f"{axis} ({'mitigation' if axis == 'p' else 'compensation'} factor), {fixed}")
            ax.set_title(f"{axis} at {fixed}")
            ax.grid(color="0.9")
        axes[0].set_ylabel("AP (%), mean over seeds")
        axes[0].legend(loc="best", frameon=False)
        fig.suptitle(f"Seesaw factors one at a time, {params['dataset']} at scale {params['scale']}", fontsize=11)
        fig.tight_layout()
        return plots.save(fig, png, svg)


def run(params: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write the sweep's table and figures under ``out_dir``; returns the written paths."""
    if sweep.spec(params) is None:
        raise ValueError("params has no 'sweep:' section: nothing to report")
    out_dir = Path(out_dir)
    built = build(params)
    missing = [e["cell"].label for e in built if e["result"].status != tables.OK]
    if sweep.control(params) is None:
        log.warning("sweep: the grid has no p = q = 0 cell: no differences from the control")
    if missing:
        log.warning("sweep: %d of %d cells not evaluated: %s", len(missing), len(built), "; ".join(missing))
    written = [write_text(out_dir / "tables" / "sweep.md", to_markdown(params, built)),
               write_text(out_dir / "tables" / "sweep.csv", to_csv(params, built)),
               write_text(out_dir / "tables" / "sweep.tex", to_latex(params, built))]
    fig_dir = out_dir / "figures"
    written += heatmaps(params, built, fig_dir / "sweep_heatmaps.png", fig_dir / "sweep_heatmaps.svg")
    written += marginals(params, built, fig_dir / "sweep_marginals.png", fig_dir / "sweep_marginals.svg")
    return written
