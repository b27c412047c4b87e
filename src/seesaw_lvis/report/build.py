"""``python -m seesaw_lvis report``: Tables 1-2 and the figures, from the pipeline's files only.

Inputs (:func:`report_inputs`; nothing else is read):

* ``<results>/eval/<row>/seed<s>/metrics.json`` of every (row, seed) (the tables, the per-class
  plot) and its ``matches.{bbox,segm}.npz`` (the bootstrap of the confidence intervals);
* ``<results>/stats/class_freq.json`` (image counts and r/c/f groups of the categories);
* ``<results>/train/<row>/seed<s>/final.pth`` of the Seesaw rows' first seed (their cumulative
  class counts);
* ``<results>/train/<row>/seed<s>/curves.json`` of every trained row's first seed (per-iteration
  losses, the train stage merges every resumed run into it: seesaw_lvis.engine.train.training_curves);
* ``<results>/train/<row>/seed<s>/config.py`` of the Seesaw rows' first seed (p of the mitigation
  factor).

Outputs (:func:`report_outputs`): ``<reports>/tables/table{1,2}.{md,csv,tex}``,
``<reports>/tables/effects.json`` (means, stds, paired differences and their CIs) and
``<reports>/figures/<figure>.{png,svg}`` for each of :data:`FIGURES`. Every output is written
even when rows are missing ("not run" in the tables, a "no data" message in the figures).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seesaw_lvis.io import read_checkpoint, read_json
from seesaw_lvis.params import row_seeds, run_dir
from seesaw_lvis.report import plots, tables
from seesaw_lvis.configs.resolve import seesaw_factors

log = logging.getLogger(__name__)

FIGURES = ("per_class_ap_vs_frequency", "table2_steps", "group_ap_bars", "training_curves", "seesaw_mitigation")
TABLE_EXTS = ("md", "csv", "tex")
FIGURE_EXTS = ("png", "svg")
TRAINED_KINDS = ("train", "finetune")
CAPTIONS_DIR = "workflow/report"

# For Snakemake's HTML report: (output name, caption file stem, category). Figures are
# flagged by their PNG (the SVG is the same picture), tables by their CSV.
REPORT_ENTRIES = (
    ("tables/table1.csv", "table1", "Tables"),
    ("tables/table2.csv", "table2", "Tables"),
    ("figures/table2_steps.png", "table2_steps", "Results"),
    ("figures/group_ap_bars.png", "group_ap_bars", "Results"),
    ("figures/per_class_ap_vs_frequency.png", "per_class_ap_vs_frequency", "Long tail"),
    ("figures/seesaw_mitigation.png", "seesaw_mitigation", "Long tail"),
    ("figures/training_curves.png", "training_curves", "Training"),
)


# --------------------------------------------------------------------------------------------
# which files
# --------------------------------------------------------------------------------------------
def _table_ids(params: Mapping[str, Any]) -> list[int]:
    return sorted({int(r["table"]) for r in params["rows"].values()})


def trained_rows(params: Mapping[str, Any]) -> list[str]:
    return [rid for rid, r in params["rows"].items() if r["kind"] in TRAINED_KINDS]


def seesaw_row(params: Mapping[str, Any], table: int) -> str | None:
    """The row of ``table`` that introduces Seesaw Loss (by its id or title), if any."""
    for rid, r in params["rows"].items():
        if int(r["table"]) == table and r["kind"] in TRAINED_KINDS and (
                "seesaw" in rid.lower() or "seesaw" in r["title"].lower()):
            return rid
    return None


def baseline_row(params: Mapping[str, Any], table: int) -> str | None:
    """The table's first row (Table 1: Random + CE)."""
    return next((rid for rid, r in params["rows"].items() if int(r["table"]) == table), None)


def mitigation_rows(params: Mapping[str, Any]) -> list[str]:
    """Where the mitigation plot's counts come from, in order of preference."""
    return [r for r in (seesaw_row(params, 2), seesaw_row(params, 1)) if r is not None]


def _res(params: Mapping[str, Any]) -> str:
    return params["paths"]["results"]


def stats_path(params: Mapping[str, Any]) -> Path:
    return Path(_res(params)) / "stats" / "class_freq.json"


def train_dir(params: Mapping[str, Any], row_id: str) -> Path:
    """The training outputs the figures read: of the row's first seed."""
    return run_dir(params, "train", row_id, row_seeds(params, row_id)[0])


def report_inputs(params: Mapping[str, Any]) -> list[str]:
    """Every file the report reads (besides the training logs, see the module docstring)."""
    res = _res(params)
    inputs = [f"{res}/stats/class_freq.json"]
    for rid in params["rows"]:
        for seed in row_seeds(params, rid):
            inputs.append(str(tables.metrics_path(params, rid, seed)))
            inputs += [str(p) for p in tables.match_paths(params, rid, seed).values()]
    inputs += [f"{train_dir(params, rid)}/curves.json" for rid in trained_rows(params)]
    for rid in mitigation_rows(params):
        inputs += [f"{train_dir(params, rid)}/final.pth", f"{train_dir(params, rid)}/config.py"]
    return inputs


def report_outputs(params: Mapping[str, Any]) -> list[str]:
    """Every file the report writes, under ``paths.reports``."""
    rep = params["paths"]["reports"]
    outs = [f"{rep}/tables/table{t}.{ext}" for t in _table_ids(params) for ext in TABLE_EXTS]
    outs.append(str(tables.effects_path(Path(rep))))
    outs += [f"{rep}/figures/{name}.{ext}" for name in FIGURES for ext in FIGURE_EXTS]
    return outs


def report_captions(params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """{output: {"caption": workflow/report/<x>.rst, "category": ...}} for Snakemake's report()."""
    rep = params["paths"]["reports"]
    return {f"{rep}/{name}": {"caption": f"{CAPTIONS_DIR}/{stem}.rst", "category": cat}
            for name, stem, cat in REPORT_ENTRIES}


# --------------------------------------------------------------------------------------------
# reading the training artefacts
# --------------------------------------------------------------------------------------------
def read_curves(train_dir_: Path) -> tuple[list[int], list[float]]:
    """(iterations, total loss) of a row's training, from the train stage's curves.json."""
    path = Path(train_dir_) / "curves.json"
    if not path.is_file():
        return [], []
    points = [p for p in json.loads(path.read_text(encoding="utf-8")) if "loss" in p and "iter" in p]
    return [int(p["iter"]) for p in points], [float(p["loss"]) for p in points]


def _natural(key: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


def cum_samples(checkpoint: Any) -> tuple[np.ndarray, str] | None:
    """The foreground class counts (background dropped) of the last Seesaw stage, and its key."""
    sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    keys = sorted((k for k in sd if k.endswith("loss_cls.cum_samples")), key=_natural)
    if not keys:
        return None
    counts = np.asarray(sd[keys[-1]].detach().cpu().numpy(), dtype=np.float64)
    return counts[:-1], keys[-1]


def seesaw_p(config_text: str, source: str = "<config>") -> float | None:
    """p of the (last) Seesaw loss in an mmengine config's Python text, without running it."""
    factors = seesaw_factors(config_text, source)
    return None if factors is None else factors[0]


def _mitigation_data(params: Mapping[str, Any]) -> dict[str, Any]:
    """Counts, p and source of the first mitigation row with a checkpoint holding counts."""
    tried = []
    for rid in mitigation_rows(params):
        ckpt_path = train_dir(params, rid) / "final.pth"
        if not ckpt_path.is_file():
            tried.append(f"{rid}: not trained")
            continue
        ckpt = read_checkpoint(ckpt_path)
        found = cum_samples(ckpt)
        if found is None:
            tried.append(f"{rid}: no loss_cls.cum_samples in final.pth")
            log.warning("%s: no '*loss_cls.cum_samples' buffer in the state_dict", ckpt_path)
            continue
        counts, key = found
        cfg_path = train_dir(params, rid) / "config.py"
        p = seesaw_p(cfg_path.read_text(encoding="utf-8"), str(cfg_path)) if cfg_path.is_file() else None
        if p is None:  # the checkpoint's own copy of the config (mmengine meta.cfg)
            cfg_text = ckpt.get("meta", {}).get("cfg") if isinstance(ckpt, dict) else None
            p = seesaw_p(cfg_text) if isinstance(cfg_text, str) else None
        if p is None:
            tried.append(f"{rid}: no Seesaw p in config.py")
            continue
        return {"counts": counts, "p": p, "row": rid,
                "source": f"row {rid}: {ckpt_path.parent.name}/{ckpt_path.name}\n{key}"}
    return {"counts": None, "p": None, "message": "no data: Seesaw rows not trained yet ("
            + "; ".join(tried) + ")" if tried else "no data: no Seesaw row in params"}


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def run(params: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write the tables and figures under ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    subtitle = f"ours: dataset {params['dataset']}, scale {params['scale']}"
    written, built = tables.write(params, out_dir, tuple(_table_ids(params)))
    by_row = {r.row: r for rows in built.values() for r in rows}
    fig_dir = out_dir / "figures"

    def paths(name: str) -> tuple[Path, Path]:
        return fig_dir / f"{name}.png", fig_dir / f"{name}.svg"

    stats = read_json(stats_path(params)) if stats_path(params).is_file() else None
    if stats is None:
        log.warning("%s missing: the per-class plot and the group boundaries are left out", stats_path(params))

    # per-class mask AP vs frequency: Table 1 CE vs Seesaw
    series = {}
    for model, rid in (("ce", baseline_row(params, 1)), ("seesaw", seesaw_row(params, 1))):
        r = by_row.get(rid) if rid else None
        if r is not None and r.status == tables.OK and r.per_class:
            series[model] = (f"{r.title} (mean of {r.n_seeds} seed{'s' if r.n_seeds > 1 else ''})", r.per_class)
        elif r is not None:
            log.warning("per_class_ap_vs_frequency: row %s is %s", rid, r.status)
    written += plots.per_class_ap_vs_frequency(stats, series, *paths("per_class_ap_vs_frequency"),
                                               subtitle=subtitle + " (mask AP, Table 1 rows)")

    written += plots.table2_steps(built.get(2, []), *paths("table2_steps"), subtitle=subtitle)
    written += plots.group_ap_bars(built, *paths("group_ap_bars"), subtitle=subtitle)

    curves = {}
    for rid in trained_rows(params):
        iters, loss = read_curves(train_dir(params, rid))
        row = params["rows"][rid]
        curves[rid] = {"title": row["title"], "table": int(row["table"]), "iters": iters, "loss": loss}
    written += plots.training_curves(curves, *paths("training_curves"), subtitle=subtitle)

    m = _mitigation_data(params)
    groups = None
    if m["counts"] is not None and stats is not None:
        cats = sorted(stats["categories"], key=lambda c: c["category_id"])  # class index = id order
        if len(cats) == len(m["counts"]):
            groups = [c["frequency"] for c in cats]
        else:
            log.warning("seesaw_mitigation: %d classes in the checkpoint, %d categories in %s",
                        len(m["counts"]), len(cats), stats_path(params))
    written += plots.seesaw_mitigation(m["counts"], m["p"], groups, *paths("seesaw_mitigation"),
                                       source=m.get("source", ""), message=m.get("message", ""))
    log.info("report: %d files written under %s", len(written), out_dir)
    return written
