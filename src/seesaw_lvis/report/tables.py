"""Tables 1 and 2 of the paper, ours beside the paper's, from the evaluation files only.

Per row (paper order, ``params['rows']``): the paper's numbers (``rows.yaml``, never used as
results) with the paper's gain, and ours from ``<results>/eval/<row>/seed<s>/metrics.json`` of
every replicate seed of the row (``seeds:`` in params): the mean +- std over the seeds
(fractions x 100, one decimal) and the gain over the reference row as a paired difference with
its bootstrap confidence interval (:mod:`seesaw_lvis.report.effects`; also written to
``tables/effects.json``):

* Table 1 compares three alternatives (CE, EQL, Seesaw) with the same baseline, and the
  paper's gains there are over the first row (EQL "19.3 (+2.4)" = 19.3 - 16.9, Seesaw
  "24.3 (+7.4)" = 24.3 - 16.9): gains are over the table's first row;
* Table 2 is cumulative, each row adds one modification to the row above: gains are step
  gains over the previous row (SyncBN "20.2 (+0.1)" = 20.2 - 20.1).

A row none of whose seeds has a metrics.json is "not run" (never 0); a seed whose ``meta``
names another scale, dataset, row or seed than the params is "stale": its numbers are not used,
so results of different settings are never mixed in one table.

Our gain is paired over the seeds both rows have (as many as the CI rests on, shown in the
tables), so with unequal seed lists it can differ from the difference of the two means.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import read_json, write_json, write_text
from seesaw_lvis.params import row_seeds, run_dir
from seesaw_lvis.params import rows as param_rows
from seesaw_lvis.report import effects

METRICS = effects.METRICS   # (key in rows.yaml `paper`, iou type in metrics.json, metric key, label)
GAIN_BASE = {1: "first", 2: "previous"}   # see the module docstring
TABLE_TITLES = {
    1: ("Mask R-CNN R50-FPN with Cross-Entropy loss (CE), Equalization Loss (EQL) and Seesaw Loss, "
        "random sampler, 1x schedule"),
    2: "Step by step results of the entry (each row adds one modification to the row above)",
}
OK, NOT_RUN, STALE = "ok", "not run", "stale"
DASH = "–"


@dataclass
class RowResult:
    """One table row: the paper's numbers, ours over seeds (or why not), differences and gains."""

    row: str
    title: str
    schedule: str
    table: int
    status: str                       # ok | not run | stale
    source: str                       # the metrics.json path pattern
    note: str = ""
    meta: dict = field(default_factory=dict)         # meta of the first seed's metrics.json
    paper: dict = field(default_factory=dict)        # metric -> float | None
    seed_values: dict = field(default_factory=dict)  # seed -> {metric: x100 float (nan: None)}
    iterations: list = field(default_factory=list)   # the seeds' trained iterations, distinct, sorted
    ours: dict = field(default_factory=dict)         # metric -> mean over seeds (x100, 1 decimal)
    ours_std: dict = field(default_factory=dict)     # metric -> std over seeds (None: one seed)
    delta: dict = field(default_factory=dict)        # ours - paper
    per_class: dict = field(default_factory=dict)    # segm per-class AP (fractions), seed mean
    paper_gain: dict = field(default_factory=dict)   # paper - paper of the reference row
    ours_gain: dict = field(default_factory=dict)    # paired mean difference vs the reference row
    gain_ci: dict = field(default_factory=dict)      # metric -> (low, high) | None
    gain_seeds: int = 0                              # seeds the gain (and its CI) rests on
    gain_over: str | None = None                     # the reference row's id

    @property
    def n_seeds(self) -> int:
        return len(self.seed_values)


def metrics_path(params: Mapping[str, Any], row_id: str, seed: int) -> Path:
    return run_dir(params, "eval", row_id, seed) / "metrics.json"


def match_paths(params: Mapping[str, Any], row_id: str, seed: int) -> dict[str, Path]:
    """The evaluate stage's per-detection matches of a run (the bootstrap's input)."""
    return {iou: run_dir(params, "eval", row_id, seed) / f"matches.{iou}.npz" for iou in ("bbox", "segm")}


def pct(value: float | None) -> float | None:
    """A fraction in [0, 1] as the table shows it: x 100, one decimal."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return round(value * 100.0, 1) + 0.0


def _round(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, 1) + 0.0  # + 0.0: no "-0.0"


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round(a - b, 1) + 0.0


def _check_meta(params: Mapping[str, Any], row_id: str, seed: int, meta: Mapping[str, Any]) -> str:
    """Why a metrics file does not belong to these params ('' when it does)."""
    wrong = []
    for key, expected in (("scale", params["scale"]), ("dataset", params["dataset"]), ("row", row_id),
                          ("seed", seed)):
        got = meta.get(key)
        if got is not None and got != expected:
            wrong.append(f"{key}={got} (params: {expected})")
    return ", ".join(wrong)


def load_row(params: Mapping[str, Any], row_id: str, row: Mapping[str, Any],
             seeds: list[int] | None = None) -> RowResult:
    """Read the metrics.json of every seed of one row (default: its seeds in params) into a
    RowResult without gains."""
    seeds = row_seeds(params, row_id) if seeds is None else seeds
    paper = {m: (None if row["paper"].get(m) is None else float(row["paper"][m])) for m, *_ in METRICS}
    pattern = str(metrics_path(params, row_id, 0)).replace("/seed0/", "/seed<s>/")
    res = RowResult(row=row_id, title=row["title"], schedule=str(row["schedule"]), table=int(row["table"]),
                    status=NOT_RUN, source=pattern, paper=paper)
    stale, per_class = [], []
    for seed in seeds:
        path = metrics_path(params, row_id, seed)
        if not path.is_file():
            continue
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        meta = dict(data.get("meta") or {})
        why = _check_meta(params, row_id, seed, meta)
        if why:
            stale.append(f"seed {seed}: metrics.json is for {why}")
            res.meta = res.meta or meta
            continue
        values = {}
        for m, iou_type, key, _ in METRICS:
            block = data.get(iou_type)
            if not isinstance(block, dict):
                raise ValueError(f"{path}: no '{iou_type}' metrics")
            v = block.get(key)
            values[m] = float("nan") if v is None else 100.0 * float(v)
        res.seed_values[seed] = values
        res.meta = meta if len(res.seed_values) == 1 else res.meta
        if meta.get("trained_iterations") is not None:
            res.iterations = sorted({*res.iterations, int(meta["trained_iterations"])})
        per_class.append(data["segm"].get("per_class") or {})
    missing = [s for s in seeds if s not in res.seed_values and not metrics_path(params, row_id, s).is_file()]
    notes = stale + ([f"seed(s) {missing} not run"] if res.seed_values and missing else [])
    res.note = "; ".join(notes)
    if res.seed_values:
        res.status = OK
    elif stale:
        res.status = STALE
    for m, *_ in METRICS:
        s = effects.summarize([v[m] for v in res.seed_values.values()])
        res.ours[m], res.ours_std[m] = _round(s["mean"]), _round(s["std"])
    keys = sorted({k for pc in per_class for k in pc}, key=int)
    for k in keys:
        vals = [pc[k] for pc in per_class if pc.get(k) is not None]
        res.per_class[k] = float(sum(vals) / len(vals)) if vals else None
    return res


def reference_index(table: int, i: int) -> int | None:
    """The row a gain is measured against (module docstring): None for the first row."""
    if i == 0:
        return None
    return 0 if GAIN_BASE.get(table, "previous") == "first" else i - 1


def build(params: Mapping[str, Any], table: int) -> tuple[list[RowResult], dict[str, dict]]:
    """The rows of one table, with differences and gains, and their effects (effects.json)."""
    out = [load_row(params, rid, row) for rid, row in param_rows(params, table).items()]

    def matches(row_id: str, seed: int) -> dict[str, Path] | None:
        files = match_paths(params, row_id, seed)
        return files if all(f.is_file() for f in files.values()) else None

    found = effects.row_effects(out, lambda i: reference_index(table, i), matches, params["report"])
    for i, r in enumerate(out):
        r.delta = {m: _diff(r.ours[m], r.paper[m]) for m, *_ in METRICS}
        j = reference_index(table, i)
        r.paper_gain = {m: None for m, *_ in METRICS}
        r.ours_gain = {m: None for m, *_ in METRICS}
        r.gain_ci = {m: None for m, *_ in METRICS}
        if j is None:
            continue
        base = out[j]
        r.gain_over = base.row
        r.paper_gain = {m: _diff(r.paper[m], base.paper[m]) for m, *_ in METRICS}
        for m, *_ in METRICS:
            d = found[r.row]["difference"].get(m)
            if d is None:
                continue
            r.ours_gain[m] = _round(d["mean"])
            r.gain_seeds = d["n_seeds"]
            if d["ci_low"] is not None:
                r.gain_ci[m] = (_round(d["ci_low"]), _round(d["ci_high"]))
    return out, found


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
def _cell(value: float | None, gain: float | None) -> str:
    """'24.3 (+7.4)' like the paper; the gain only where there is one."""
    if value is None:
        return DASH
    return f"{value:.1f} ({gain:+.1f})" if gain is not None else f"{value:.1f}"


def ours_mean_cell(r: RowResult, m: str) -> str:
    """'24.5 ± 0.3' (mean ± std over seeds; the mean alone for one seed)."""
    if r.status != OK:
        return r.status
    v, s = r.ours[m], r.ours_std.get(m)
    if v is None:
        return DASH
    return f"{v:.1f} ± {s:.1f}" if s is not None else f"{v:.1f}"


def interval_cell(value: float | None, ci: tuple[float, float] | None = None, signed: bool = False) -> str:
    """An estimate with its CI: '+9.4 [+7.1, +11.6]' (signed: a difference), '18.0 [16.4, 22.7]'."""
    if value is None:
        return DASH
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return fmt.format(value) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def ours_gain_cell(r: RowResult, m: str) -> str:
    """'+9.4 [+7.1, +11.6]': the paired difference vs the reference row and its CI."""
    if r.status != OK:
        return DASH
    return interval_cell(r.ours_gain.get(m), r.gain_ci.get(m), signed=True)


def _gain_phrase(table: int, rows: list[RowResult]) -> str:
    if GAIN_BASE.get(table, "previous") == "first" and rows:
        return f"gain over the first row ({rows[0].title}), as in the paper"
    return "step gain over the previous row, as in the paper"


def caption(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    """The caption: what the table is, on which data and scale, and which rows are missing."""
    dataset, scale = params["dataset"], params["scale"]
    ok = [r for r in rows if r.status == OK]
    metas = sorted({(r.meta.get("dataset", dataset), r.meta.get("scale", scale)) for r in ok})
    spec = params["report"]
    parts = [
        f"Table {table}. {TABLE_TITLES.get(table, '')}.",
        f"Ours: dataset '{dataset}', scale '{scale}' (params), {len(ok)} of {len(rows)} rows evaluated"
        + (f", their metrics.json say dataset/scale {', '.join(f'{d}/{s}' for d, s in metas)}" if metas else "")
        + ".",
        "Paper: LVIS v1 val, full scale (the paper's own numbers, rows.yaml, one run per row).",
        "Bbox AP = bbox AP, Bbox APr = bbox AP of the rare categories (the paper gives none), Mask AP = "
        "mask AP; APr/APc/APf are mask APs of the rare/common/frequent categories (x100).",
        f"Paper: in parentheses the {_gain_phrase(table, rows)}.",
        "Schedule: the paper's; Iters: the iterations the evaluated weights trained at this scale "
        "(metrics.json meta.trained_iterations; a finetuning row's own, after its parent's; a tta row "
        "evaluates its parent's weights).",
        f"Ours: mean ± std over the row's seeds (Seeds); gain = {_gain_phrase(table, rows).split(',')[0]}, "
        f"paired over the seeds both rows have, with its {spec['ci_level']:.0%} bootstrap CI "
        f"({spec['bootstrap_samples']} resamples of val images and seeds).",
    ]
    if (dataset, scale) != ("lvis_v1", "full"):
        parts.append("Ours and the paper's differ in data and scale, so compare gains, not absolute numbers.")
    not_run = [r.row for r in rows if r.status == NOT_RUN]
    if not_run:
        parts.append(f"Not run (no metrics.json): {', '.join(not_run)}.")
    for r in rows:
        if r.note:
            parts.append(f"{r.row}: {r.note}; not shown." if r.status == STALE else f"{r.row}: {r.note}.")
    return " ".join(parts)


def _seeds_cell(r: RowResult) -> str:
    return str(r.n_seeds) if r.status == OK else DASH


def _iterations_cell(r: RowResult) -> str:
    """'797'; seeds that trained different lengths: '60/797'; unknown (older metrics files): '–'."""
    return "/".join(map(str, r.iterations)) if r.status == OK and r.iterations else DASH


def to_markdown(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    head = ["Row", "Schedule", "Iters", "Seeds"]
    for _, _, _, label in METRICS:
        head += [f"{label} paper", f"{label} ours", f"{label} gain [CI]"]
    cap, head_text = caption(params, table, rows), f"Table {table}."
    lines = [f"**{head_text}**{cap[len(head_text):]}", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join([":---", ":---:", "---:", ":---:"] + ["---:"] * (3 * len(METRICS))) + "|"]
    for r in rows:
        cells = [r.title.replace("|", "\\|"), r.schedule, _iterations_cell(r), _seeds_cell(r)]
        for m, *_ in METRICS:
            cells += [_cell(r.paper[m], r.paper_gain.get(m)), ours_mean_cell(r, m), ours_gain_cell(r, m)]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        lines += ["", f"Sources: `{rows[0].source}` of every seed (ours), `params/rows.yaml` (paper); "
                      "the same figures, unrounded: `tables/effects.json`."]
    return "\n".join(lines).rstrip() + "\n"


CSV_METRIC_FIELDS = ("paper", "ours", "ours_std", "delta", "paper_gain", "ours_gain", "ours_gain_ci_low",
                     "ours_gain_ci_high")


def csv_fields() -> list[str]:
    fields = ["table", "row", "title", "schedule", "iterations", "status", "note", "seeds", "gain_over", "gain_seeds",
              "dataset", "scale", "source"]
    for m, *_ in METRICS:
        fields += [f"{m}_{f}" for f in CSV_METRIC_FIELDS]
    return fields


def _field(r: RowResult, f: str, m: str) -> float | None:
    if f.startswith("ours_gain_ci_"):
        ci = r.gain_ci.get(m)
        return None if ci is None else ci[0 if f.endswith("low") else 1]
    return getattr(r, f)[m]


def to_csv(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=csv_fields(), lineterminator="\n")
    w.writeheader()
    for r in rows:
        rec: dict[str, Any] = {"table": table, "row": r.row, "title": r.title, "schedule": r.schedule,
                               "iterations": " ".join(map(str, r.iterations)) if r.status == OK else "",
                               "status": r.status, "note": r.note,
                               "seeds": " ".join(str(s) for s in sorted(r.seed_values)),
                               "gain_over": r.gain_over or "", "gain_seeds": r.gain_seeds if r.gain_over else "",
                               "dataset": r.meta.get("dataset", params["dataset"] if r.status == OK else ""),
                               "scale": r.meta.get("scale", params["scale"] if r.status == OK else ""),
                               "source": r.source}
        for m, *_ in METRICS:
            for f in CSV_METRIC_FIELDS:
                v = _field(r, f, m)
                rec[f"{m}_{f}"] = "" if v is None else f"{v:.1f}"
        w.writerow(rec)
    return buf.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return ("".join(_TEX_ESCAPES.get(ch, ch) for ch in text).replace(DASH, "--").replace("Δ", r"$\Delta$")
            .replace("±", r"$\pm$"))


def _tex_cell(value: float | None, gain: float | None) -> str:
    if value is None:
        return "--"
    return f"{value:.1f}" + (f" {{\\scriptsize({gain:+.1f})}}" if gain is not None else "")


def to_latex(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    n = len(METRICS)
    lines = [
        "% Generated by `python -m seesaw_lvis report` from results/eval/<row>/seed<s>/metrics.json; do not edit.",
        "% Needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        "\\scriptsize",
        "\\setlength{\\tabcolsep}{3pt}",
        f"\\caption{{{tex_escape(caption(params, table, rows))}}}",
        f"\\label{{tab:table{table}}}",
        "\\begin{tabular}{llrc" + "rrr" * n + "}",
        "\\toprule",
        " & & & & " + " & ".join(f"\\multicolumn{{3}}{{c}}{{{tex_escape(label)}}}" for *_, label in METRICS) + " \\\\",
        " ".join(f"\\cmidrule(lr){{{5 + 3 * k}-{7 + 3 * k}}}" for k in range(n)),
        "Row & Schedule & Iters & Seeds & " + " & ".join(["paper & ours & gain [CI]"] * n) + " \\\\",
        "\\midrule",
    ]
    for r in rows:
        cells = [tex_escape(r.title), tex_escape(r.schedule), tex_escape(_iterations_cell(r)), tex_escape(_seeds_cell(r))]
        for m, *_ in METRICS:
            ours = tex_escape(ours_mean_cell(r, m)) if r.status == OK else f"\\textit{{{r.status}}}"
            cells += [_tex_cell(r.paper[m], r.paper_gain.get(m)), ours, tex_escape(ours_gain_cell(r, m))]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def table_paths(out_dir: Path, table: int) -> dict[str, Path]:
    return {ext: Path(out_dir) / "tables" / f"table{table}.{ext}" for ext in ("md", "csv", "tex")}


def effects_path(out_dir: Path) -> Path:
    return Path(out_dir) / "tables" / "effects.json"


def effects_doc(params: Mapping[str, Any], built: Mapping[int, list[RowResult]],
                found: Mapping[int, Mapping[str, dict]]) -> dict:
    """``effects.json``: per row and metric {mean, std, n_seeds}, and the paired difference
    against the reference row {mean, ci_low, ci_high, n_seeds, seeds} (0-100 scale)."""
    spec = params["report"]
    doc: dict[str, Any] = {
        "meta": {"dataset": params["dataset"], "scale": params["scale"], "scale_of_metrics": "0-100",
                 "bootstrap_samples": spec["bootstrap_samples"], "ci_level": spec["ci_level"],
                 "bootstrap_seed": spec["bootstrap_seed"],
                 "resampling": "val images (one multinomial draw per sample, shared by all runs) and the "
                               "common seeds of the two rows (drawn with replacement, paired)",
                 "reference": {"table1": "the table's first row", "table2": "the row above"}},
        "rows": {}}
    for t, rows in built.items():
        for r in rows:
            e = found[t][r.row]
            doc["rows"][r.row] = {"table": t, "title": r.title, "status": r.status, **e}
    return doc


def write(params: Mapping[str, Any], out_dir: Path, tables: tuple[int, ...] = (1, 2)) -> tuple[list[Path], dict]:
    """Write tables/table<N>.{md,csv,tex} and tables/effects.json under ``out_dir``;
    returns (paths, {table: rows})."""
    written: list[Path] = []
    built: dict[int, list[RowResult]] = {}
    found: dict[int, dict] = {}
    for t in tables:
        rows, found[t] = build(params, t)
        built[t] = rows
        paths = table_paths(out_dir, t)
        written.append(write_text(paths["md"], to_markdown(params, t, rows)))
        written.append(write_text(paths["csv"], to_csv(params, t, rows)))
        written.append(write_text(paths["tex"], to_latex(params, t, rows)))
    written.append(write_json(effects_path(out_dir), effects_doc(params, built, found)))
    return written, built
