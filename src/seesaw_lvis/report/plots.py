"""The report's figures, each written as PNG (dpi 150) and SVG, atomically.

Every function takes data already read by :mod:`seesaw_lvis.report.build` (it reads no file
itself), draws one figure and writes it. Missing data never skips a figure: it is drawn with
a "no data: ..." message in it and a warning is logged, so the stage's outputs always exist.

Colours are Okabe-Ito (:mod:`seesaw_lvis.report.style`); what colour tells apart is also told
apart by marker, fill or line style.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seesaw_lvis.io import atomic_path
from seesaw_lvis.report import style

log = logging.getLogger(__name__)

NO_DATA = "no data: rows not run yet"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, png: Path, svg: Path) -> list[Path]:
    """Write ``fig`` to both paths atomically (deterministic metadata) and close it."""
    plt = _plt()
    written = []
    for path, fmt, meta in ((Path(png), "png", {"Software": None}), (Path(svg), "svg", {"Date": None})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=style.DPI, metadata=meta)
        written.append(path)
    plt.close(fig)
    return written


def no_data(ax, message: str, what: str) -> None:
    """A clear in-figure message where a figure's data are missing; logs a warning."""
    log.warning("%s: %s", what, message)
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=12,
            color=style.MISSING_COLOUR, wrap=True,
            bbox=dict(boxstyle="round,pad=0.6", facecolor="white", edgecolor=style.MISSING_COLOUR))


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# --------------------------------------------------------------------------------------------
# per-class mask AP vs training image count
# --------------------------------------------------------------------------------------------
def per_class_ap_vs_frequency(stats: Mapping[str, Any] | None, series: Mapping[str, tuple[str, Mapping]],
                              png: Path, svg: Path, subtitle: str = "") -> list[Path]:
    """Per-class mask AP (x100) against training image count (log x).

    ``series``: {"ce" | "seesaw": (label, per_class {str(cat_id): AP fraction or None})};
    a model whose row is not run is left out of ``series``. Points are coloured by the
    category's r/c/f group; CE is hollow circles, Seesaw filled triangles. Categories without
    training images (log scale) or with AP None (no val GT) are skipped.
    """
    plt = _plt()
    with plt.rc_context(style.RC):
        fig, ax = plt.subplots(figsize=(9.5, 5))
        what = "per_class_ap_vs_frequency"
        cats = {str(c["category_id"]): c for c in (stats or {}).get("categories", [])}
        drawn = 0
        if not stats:
            no_data(ax, "no data: class_freq.json missing (stats stage not run yet)", what)
        elif not series:
            no_data(ax, f"{NO_DATA} (no per-class AP for the CE and Seesaw rows)", what)
        else:
            dodge = {"ce": 0.96, "seesaw": 1.04}
            for model, (label, per_class) in series.items():
                xs, ys, cs = [], [], []
                for cid, ap in per_class.items():
                    c = cats.get(str(cid))
                    if ap is None or c is None or not c.get("image_count") or c.get("frequency") not in "rcf":
                        continue
                    xs.append(c["image_count"] * dodge.get(model, 1.0))
                    ys.append(100.0 * ap)
                    cs.append(style.GROUP_COLOURS[c["frequency"]])
                drawn += len(xs)
                filled = style.MODEL_FILLED.get(model, True)
                ax.scatter(xs, ys, marker=style.MODEL_MARKERS.get(model, "o"), s=34, linewidths=1.2,
                           facecolors=cs if filled else "none", edgecolors=cs, alpha=0.9, zorder=3)
                # the model's mean AP per log-spaced bin of image counts, as a guide for the eye
                if xs:
                    x = np.asarray(xs) / dodge.get(model, 1.0)
                    y = np.asarray(ys)
                    edges = np.logspace(0, math.log10(max(x.max(), 2.0)) + 1e-9, 8)
                    idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
                    mx = [math.sqrt(edges[b] * edges[b + 1]) for b in range(len(edges) - 1) if np.any(idx == b)]
                    my = [y[idx == b].mean() for b in range(len(edges) - 1) if np.any(idx == b)]
                    ax.plot(mx, my, color=style.OKABE_ITO["black"], linestyle="--" if model == "ce" else "-",
                            linewidth=1.5, marker=style.MODEL_MARKERS.get(model, "o"),
                            markerfacecolor="white" if not filled else style.OKABE_ITO["black"],
                            markersize=6, zorder=4)
            if drawn == 0:
                no_data(ax, "no data: no category has both a per-class AP and training images", what)
        if drawn:
            ax.set_xscale("log")
            ax.set_ylim(-3, 103)
            for limit in (10.5, 100.5):  # LVIS's group boundaries (rare 1-10, common 11-100 images)
                ax.axvline(limit, color="0.5", linestyle=":", linewidth=1, zorder=1)
            Line2D = plt.matplotlib.lines.Line2D
            group_handles = [Line2D([], [], linestyle="", marker="s", markersize=8, color=style.GROUP_COLOURS[g],
                                    label=style.GROUP_NAMES[g]) for g in "rcf"]
            model_handles = [Line2D([], [], color=style.OKABE_ITO["black"], linestyle="--" if m == "ce" else "-",
                                    marker=style.MODEL_MARKERS.get(m, "o"),
                                    markerfacecolor="none" if not style.MODEL_FILLED.get(m, True)
                                    else style.OKABE_ITO["black"], label=label)
                             for m, (label, _) in series.items()]
            leg = ax.legend(handles=group_handles, title="frequency group\n(point colour)", loc="upper left",
                            bbox_to_anchor=(1.01, 1.0), frameon=False, alignment="left")
            ax.add_artist(leg)
            ax.legend(handles=model_handles, title="model (point marker;\nline: mean AP per bin)",
                      loc="upper left", bbox_to_anchor=(1.01, 0.62), frameon=False, alignment="left")
        ax.set_xlabel("training images containing the category (log scale)")
        ax.set_ylabel("per-class mask AP (%)")
        ax.set_title("Per-class mask AP vs training frequency" + (f"\n{subtitle}" if subtitle else ""))
        if not drawn:
            _blank(ax)
        fig.tight_layout()
        return save(fig, png, svg)


# --------------------------------------------------------------------------------------------
# Table 2 as a step chart
# --------------------------------------------------------------------------------------------
def _std(r: Any, metric: str) -> float:
    """A row's std over seeds (0 where there is none: one seed, or not run)."""
    s = getattr(r, "ours_std", {}).get(metric) if r.status == "ok" else None
    return 0.0 if s is None else float(s)


def table2_steps(rows: Sequence[Any], png: Path, svg: Path, subtitle: str = "") -> list[Path]:
    """Mask AP per Table 2 row, paper vs ours; rows without our numbers are gaps."""
    plt = _plt()
    with plt.rc_context(style.RC):
        fig, ax = plt.subplots(figsize=(10, 5.2))
        x = np.arange(len(rows))
        paper = np.array([np.nan if r.paper["mask_AP"] is None else r.paper["mask_AP"] for r in rows], float)
        ours = np.array([np.nan if (r.status != "ok" or r.ours["mask_AP"] is None) else r.ours["mask_AP"]
                         for r in rows], float)
        std = np.array([_std(r, "mask_AP") for r in rows], float)
        for name, y in (("paper", paper), ("ours", ours)):
            label = "paper (LVIS v1 val, full scale, one run)" if name == "paper" else \
                "ours (mean over seeds; bars: ± std)"
            ax.plot(x, y, drawstyle="steps-mid", color=style.SOURCE_COLOURS[name],
                    linestyle=style.SOURCE_LINESTYLES[name], linewidth=1.8, marker=style.SOURCE_MARKERS[name],
                    markersize=6, label=label)
        ax.errorbar(x, ours, yerr=np.nan_to_num(std), fmt="none", ecolor=style.SOURCE_COLOURS["ours"],
                    elinewidth=1.2, capsize=4, zorder=4)
        if np.all(np.isnan(ours)):
            no_data(ax, f"{NO_DATA} (ours: no Table 2 row evaluated)", "table2_steps")
        ymax = np.nanmax(np.concatenate([paper, ours, [1.0]]))
        for i, r in enumerate(rows):
            if np.isnan(ours[i]):
                ax.text(i, 0.02 * ymax, r.status, rotation=90, ha="center", va="bottom", fontsize=8,
                        color=style.MISSING_COLOUR)
        ax.set_xticks(x)
        ax.set_xticklabels([r.title for r in rows], rotation=35, ha="right")
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylim(0, ymax * 1.12)
        ax.set_ylabel("mask AP (%)")
        ax.set_title("Table 2 step by step: mask AP per row" + (f"\n{subtitle}" if subtitle else ""))
        ax.grid(axis="y", color="0.9")
        ax.legend(loc="upper left", frameon=False)
        fig.tight_layout()
        return save(fig, png, svg)


# --------------------------------------------------------------------------------------------
# APr / APc / APf bars
# --------------------------------------------------------------------------------------------
def group_ap_bars(tables: Mapping[int, Sequence[Any]], png: Path, svg: Path, subtitle: str = "") -> list[Path]:
    """APr/APc/APf per row: ours filled, the paper's hatched outlines behind them; one panel per table."""
    plt = _plt()
    with plt.rc_context(style.RC):
        keys = sorted(tables)
        widths = [max(len(tables[t]), 1) + 1 for t in keys]
        fig, axes = plt.subplots(1, len(keys), figsize=(14, 5.4), sharey=True,
                                 gridspec_kw={"width_ratios": widths}, squeeze=False)
        axes = axes[0]
        ymax = 1.0
        for t in keys:
            for r in tables[t]:
                for g in "rcf":
                    for v in (r.paper[f"AP{g}"], r.ours[f"AP{g}"] if r.status == "ok" else None):
                        if v is not None:
                            ymax = max(ymax, v)
        any_ours = False
        for ax, t in zip(axes, keys):
            rows = tables[t]
            for i, r in enumerate(rows):
                for k, g in enumerate("rcf"):
                    colour = style.GROUP_COLOURS[g]
                    x_ours, x_paper = i + (k - 1) * 0.28 - 0.065, i + (k - 1) * 0.28 + 0.065
                    ov = r.ours[f"AP{g}"] if r.status == "ok" else None
                    if ov is not None:
                        any_ours = True
                        ax.bar(x_ours, ov, width=0.13, color=colour, edgecolor=colour, linewidth=0.8, zorder=3,
                               yerr=_std(r, f"AP{g}"), error_kw=dict(ecolor="0.15", elinewidth=0.9, capsize=2))
                    pv = r.paper[f"AP{g}"]
                    if pv is not None:
                        ax.bar(x_paper, pv, width=0.13, facecolor="white", edgecolor=colour, hatch="/////",
                               linewidth=0.8, zorder=3)
                if r.status != "ok":
                    top = max([v for v in (r.paper[f"AP{g}"] for g in "rcf") if v is not None], default=0.0)
                    ax.text(i, top + 0.02 * ymax, f"ours:\n{r.status}", ha="center", va="bottom",
                            fontsize=7.5, color=style.MISSING_COLOUR, zorder=4, linespacing=1.0)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([r.title for r in rows], rotation=35, ha="right")
            ax.set_xlim(-0.6, len(rows) - 0.4)
            ax.set_title(f"Table {t}")
            ax.grid(axis="y", color="0.9", zorder=0)
        if not any_ours:
            no_data(axes[-1], f"{NO_DATA} (ours)", "group_ap_bars")
        axes[0].set_ylim(0, ymax * 1.2)
        axes[0].set_ylabel("mask AP of the group (%)")
        Patch = plt.matplotlib.patches.Patch
        handles = [Patch(facecolor=style.GROUP_COLOURS[g], label=f"AP{g} ours ({style.GROUP_NAMES[g]})")
                   for g in "rcf"]
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="/////",
                             label="paper (hatched, right of ours; LVIS v1 val, full scale)"))
        handles.append(plt.matplotlib.lines.Line2D([], [], color="0.15", label="ours: mean over seeds ± std"))
        fig.legend(handles=handles, loc="upper right", ncol=4, frameon=False, bbox_to_anchor=(0.99, 0.995))
        fig.suptitle("APr / APc / APf per row: ours (filled) and the paper (hatched)"
                     + (f"\n{subtitle}" if subtitle else ""), x=0.01, ha="left", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return save(fig, png, svg)


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------
def training_curves(curves: Mapping[str, Mapping[str, Any]], png: Path, svg: Path, subtitle: str = "",
                    ncols: int = 4) -> list[Path]:
    """Total training loss vs iteration, one small panel per trained row.

    ``curves``: {row_id: {"title", "table", "iters": [...], "loss": [...]}} in paper order;
    a row with no log has empty lists and gets a "not run" panel.
    """
    plt = _plt()
    with plt.rc_context(style.RC):
        n = max(len(curves), 1)
        ncols = min(ncols, n)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.5 * nrows + 0.8), squeeze=False)
        flat = list(axes.ravel())
        any_curve = False
        for ax, (row_id, c) in zip(flat, curves.items()):
            ax.set_title(f"{c.get('title', row_id)}\n({row_id})", fontsize=9)
            if c["iters"]:
                any_curve = True
                ax.plot(c["iters"], c["loss"], color=style.TABLE_COLOURS.get(c.get("table"), "black"),
                        linewidth=1.2)
                ax.set_xlabel("iteration", fontsize=8)
                ax.set_ylabel("total loss", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(color="0.92")
            else:
                ax.text(0.5, 0.5, "not run\n(no training log)", transform=ax.transAxes, ha="center",
                        va="center", color=style.MISSING_COLOUR, fontsize=9)
                _blank(ax)
        for ax in flat[len(curves):]:
            ax.set_visible(False)
        if not any_curve:
            log.warning("training_curves: %s (no curves.json of any trained row)", NO_DATA)
            fig.text(0.5, 0.5, f"{NO_DATA} (no training log)", ha="center", va="center", fontsize=14,
                     color=style.MISSING_COLOUR,
                     bbox=dict(boxstyle="round,pad=0.6", facecolor="white", edgecolor=style.MISSING_COLOUR))
        fig.suptitle("Training loss per trained row (curves.json; blue: Table 1, purple: Table 2)"
                     + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
        fig.tight_layout()
        return save(fig, png, svg)


# --------------------------------------------------------------------------------------------
# Seesaw mitigation factors
# --------------------------------------------------------------------------------------------
def mitigation_matrix(counts: Sequence[float] | np.ndarray, p: float) -> np.ndarray:
    """S_ij = (N_j / N_i)^p if N_i > N_j else 1 (paper eq. 3), in the order given.

    Row i: the positive (ground-truth) class, column j: the negative class whose logit is
    penalised. Counts are clamped to >= 1 as the loss does.
    """
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    ratio = n[None, :] / n[:, None]            # N_j / N_i
    return np.where(n[:, None] > n[None, :], ratio ** p, 1.0)


def seesaw_mitigation(counts: np.ndarray | None, p: float | None, groups: Sequence[str | None] | None,
                      png: Path, svg: Path, source: str = "", message: str = "") -> list[Path]:
    """Heat map of S (log colour), categories sorted by cumulative count (descending).

    ``groups``: the r/c/f group of each class in the counts' order (None: unknown); shown as a
    colour strip along both axes, with boundary lines where the groups are contiguous.
    """
    plt = _plt()
    from matplotlib.colors import ListedColormap, LogNorm

    with plt.rc_context(style.RC):
        fig = plt.figure(figsize=(7.6, 6.6))
        if counts is None or p is None or len(counts) == 0:
            ax = fig.add_subplot(1, 1, 1)
            no_data(ax, message or f"{NO_DATA} (no trained Seesaw row)", "seesaw_mitigation")
            _blank(ax)
            ax.set_title("Seesaw mitigation factors S_ij")
            fig.tight_layout()
            return save(fig, png, svg)
        counts = np.asarray(counts, dtype=np.float64)
        order = np.argsort(-counts, kind="stable")
        s = mitigation_matrix(counts[order], p)
        vmin = min(float(s.min()), 0.99)
        ax = fig.add_axes([0.16, 0.17, 0.62, 0.66])
        im = ax.imshow(s, cmap=style.HEATMAP_CMAP, norm=LogNorm(vmin=vmin, vmax=1.0), interpolation="nearest",
                       aspect="auto")
        c = len(counts)
        ax.set_xlabel("negative class j (sorted by cumulative count, descending)")
        ax.set_ylabel("ground-truth class i (same order)")
        cax = fig.add_axes([0.83, 0.17, 0.03, 0.66])
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("S_ij (log scale; 1 = no mitigation)")
        sorted_groups = [groups[k] for k in order] if groups is not None and len(groups) == c else None
        if sorted_groups is not None and all(g in ("r", "c", "f") for g in sorted_groups):
            cmap = ListedColormap([style.GROUP_COLOURS[g] for g in "rcf"])
            codes = np.array([["rcf".index(g) for g in sorted_groups]])
            top = fig.add_axes([0.16, 0.835, 0.62, 0.025], sharex=ax)
            left = fig.add_axes([0.125, 0.17, 0.025, 0.66], sharey=ax)
            top.imshow(codes, cmap=cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
            left.imshow(codes.T, cmap=cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
            for a in (top, left):
                a.set_xticks([])
                a.set_yticks([])
            ax.tick_params(labelleft=False)
            ax.set_ylabel("")
            left.set_ylabel("ground-truth class i (same order)")
            # boundaries: after the |f| and |f| + |c| classes of highest count, where the groups would
            # change if they followed the count order exactly; the strips show each class's own group
            from matplotlib import patheffects

            outline = [patheffects.withStroke(linewidth=2.6, foreground="black")]
            n_f = sum(g == "f" for g in sorted_groups)
            n_c = sum(g == "c" for g in sorted_groups)
            for k in sorted({n_f, n_f + n_c} - {0, c}):
                for line in (ax.axvline, ax.axhline):
                    line(k - 0.5, color="white", linewidth=1.3, path_effects=outline)
            mixed = sum(g != want for g, want in zip(sorted_groups, ["f"] * n_f + ["c"] * n_c + ["r"] * c))
            Patch = plt.matplotlib.patches.Patch
            fig.legend(handles=[Patch(facecolor=style.GROUP_COLOURS[g], label=style.GROUP_NAMES[g]) for g in "fcr"],
                       loc="lower left", ncol=3, frameon=False, bbox_to_anchor=(0.12, 0.0),
                       title="frequency group (strips); lines: group boundaries in count order"
                       + (f" ({mixed} classes on the other side)" if mixed else ""))
        else:
            log.warning("seesaw_mitigation: the frequency groups of the %d classes are unknown "
                        "(class_freq.json missing or of another class count): no group boundaries", c)
        fig.text(0.16, 0.955, f"Seesaw mitigation factors S_ij = (N_j/N_i)^p if N_i > N_j else 1, p = {p:g}",
                 fontsize=11, ha="left")
        fig.text(0.16, 0.92, f"N: cumulative class counts ({c} classes) of {source}"
                 + (f"\n{message}" if message else ""), fontsize=8.5, ha="left", va="top", color="0.25",
                 wrap=True)
        return save(fig, png, svg)
