"""Tables 1 and 2 of the paper, ours beside the paper's, from the evaluation files only.

Per row (paper order, ``params['rows']``): the paper's numbers (``rows.yaml``, never used as
results), ours from ``<results>/eval/<row>/metrics.json`` (fractions x 100, one decimal),
the difference ours - paper and the gain over the reference row, for ours and for the paper:

* Table 1 compares three alternatives (CE, EQL, Seesaw) with the same baseline, and the
  paper's gains there are over the first row (EQL "19.3 (+2.4)" = 19.3 - 16.9, Seesaw
  "24.3 (+7.4)" = 24.3 - 16.9): gains are over the table's first row;
* Table 2 is cumulative, each row adds one modification to the row above: gains are step
  gains over the previous row (SyncBN "20.2 (+0.1)" = 20.2 - 20.1).

A row whose metrics.json is missing is "not run" (never 0); one whose ``meta`` names another
scale, dataset or row than the params is "stale": its numbers are not shown (nor used in a
gain), so results of different settings are never mixed in one table.

Differences and gains are computed from the one-decimal numbers the table shows, so every
table is consistent with itself.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import read_json, write_text
from seesaw_lvis.params import rows as param_rows

# (key in rows.yaml `paper`, iou type in metrics.json, metric key, column label)
METRICS = (
    ("bbox_AP", "bbox", "AP", "Bbox AP"),
    ("mask_AP", "segm", "AP", "Mask AP"),
    ("APr", "segm", "APr", "APr"),
    ("APc", "segm", "APc", "APc"),
    ("APf", "segm", "APf", "APf"),
)
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
    """One table row: the paper's numbers, ours (or why not), differences and gains."""

    row: str
    title: str
    schedule: str
    table: int
    status: str                       # ok | not run | stale
    source: str                       # the metrics.json path
    note: str = ""
    meta: dict = field(default_factory=dict)
    paper: dict = field(default_factory=dict)        # metric -> float | None
    ours: dict = field(default_factory=dict)         # metric -> float | None (x100, 1 decimal)
    delta: dict = field(default_factory=dict)        # ours - paper
    per_class: dict = field(default_factory=dict)    # segm per-class AP (fractions) as in the file
    paper_gain: dict = field(default_factory=dict)   # paper - paper of the reference row
    ours_gain: dict = field(default_factory=dict)    # ours - ours of the reference row
    gain_over: str | None = None                     # the reference row's id


def metrics_path(params: Mapping[str, Any], row_id: str) -> Path:
    return Path(params["paths"]["results"]) / "eval" / row_id / "metrics.json"


def pct(value: float | None) -> float | None:
    """A fraction in [0, 1] as the table shows it: x 100, one decimal."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return round(value * 100.0, 1) + 0.0


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round(a - b, 1) + 0.0  # + 0.0: no "-0.0"


def _check_meta(params: Mapping[str, Any], row_id: str, meta: Mapping[str, Any]) -> str:
    """Why a metrics file does not belong to these params ('' when it does)."""
    wrong = []
    for key, expected in (("scale", params["scale"]), ("dataset", params["dataset"]), ("row", row_id)):
        got = meta.get(key)
        if got is not None and got != expected:
            wrong.append(f"{key}={got} (params: {expected})")
    return ", ".join(wrong)


def load_row(params: Mapping[str, Any], row_id: str, row: Mapping[str, Any]) -> RowResult:
    """Read one row's metrics.json (if any) into a RowResult without gains."""
    path = metrics_path(params, row_id)
    paper = {m: (None if row["paper"].get(m) is None else float(row["paper"][m])) for m, *_ in METRICS}
    res = RowResult(row=row_id, title=row["title"], schedule=str(row["schedule"]), table=int(row["table"]),
                    status=NOT_RUN, source=str(path), paper=paper)
    if not path.is_file():
        res.ours = {m: None for m, *_ in METRICS}
        return res
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    res.meta = dict(data.get("meta") or {})
    stale = _check_meta(params, row_id, res.meta)
    if stale:
        res.status, res.note = STALE, f"metrics.json is for {stale}"
        res.ours = {m: None for m, *_ in METRICS}
        return res
    res.status = OK
    for m, iou_type, key, _ in METRICS:
        block = data.get(iou_type)
        if not isinstance(block, dict):
            raise ValueError(f"{path}: no '{iou_type}' metrics")
        res.ours[m] = pct(block.get(key))
    res.per_class = dict(data["segm"].get("per_class") or {})
    return res


def build(params: Mapping[str, Any], table: int) -> list[RowResult]:
    """The rows of one table, with differences and gains."""
    out = [load_row(params, rid, row) for rid, row in param_rows(params, table).items()]
    for i, r in enumerate(out):
        r.delta = {m: _diff(r.ours[m], r.paper[m]) for m, *_ in METRICS}
        if i == 0:
            r.paper_gain = {m: None for m, *_ in METRICS}
            r.ours_gain = {m: None for m, *_ in METRICS}
            continue
        base = out[0] if GAIN_BASE.get(table, "previous") == "first" else out[i - 1]
        r.gain_over = base.row
        r.paper_gain = {m: _diff(r.paper[m], base.paper[m]) for m, *_ in METRICS}
        r.ours_gain = {m: _diff(r.ours[m], base.ours[m]) for m, *_ in METRICS}
    return out


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
def _num(v: float | None) -> str:
    return DASH if v is None else f"{v:.1f}"


def _signed(v: float | None) -> str:
    return DASH if v is None else f"{v:+.1f}"


def _cell(value: float | None, gain: float | None) -> str:
    """'24.3 (+7.4)' like the paper; the gain only where there is one."""
    if value is None:
        return DASH
    return f"{value:.1f} ({gain:+.1f})" if gain is not None else f"{value:.1f}"


def _ours_cell(r: RowResult, m: str) -> str:
    if r.status != OK:
        return r.status
    return _cell(r.ours[m], r.ours_gain.get(m))


def _gain_phrase(table: int, rows: list[RowResult]) -> str:
    if GAIN_BASE.get(table, "previous") == "first" and rows:
        return f"gain over the first row ({rows[0].title}), as in the paper"
    return "step gain over the previous row, as in the paper"


def caption(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    """The caption: what the table is, on which data and scale, and which rows are missing."""
    dataset, scale = params["dataset"], params["scale"]
    ok = [r for r in rows if r.status == OK]
    metas = sorted({(r.meta.get("dataset", dataset), r.meta.get("scale", scale)) for r in ok})
    parts = [
        f"Table {table}. {TABLE_TITLES.get(table, '')}.",
        f"Ours: dataset '{dataset}', scale '{scale}' (params), {len(ok)} of {len(rows)} rows evaluated"
        + (f", their metrics.json say dataset/scale {', '.join(f'{d}/{s}' for d, s in metas)}" if metas else "")
        + ".",
        "Paper: LVIS v1 val, full scale (the paper's own numbers, rows.yaml).",
        "Bbox AP = bbox AP, Mask AP = mask AP; APr/APc/APf are mask APs of the rare/common/frequent "
        "categories (x100).",
        f"In parentheses: {_gain_phrase(table, rows)}. Delta = ours - paper.",
    ]
    if (dataset, scale) != ("lvis_v1", "full"):
        parts.append("Ours and the paper's differ in data and scale, so compare gains, not absolute numbers.")
    not_run = [r.row for r in rows if r.status == NOT_RUN]
    stale = [r for r in rows if r.status == STALE]
    if not_run:
        parts.append(f"Not run (no metrics.json): {', '.join(not_run)}.")
    for r in stale:
        parts.append(f"Stale: {r.row}: {r.note}; not shown.")
    return " ".join(parts)


def to_markdown(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    head = ["Row", "Schedule"]
    for _, _, _, label in METRICS:
        head += [f"{label} paper", f"{label} ours", f"Δ {label}"]
    cap, head_text = caption(params, table, rows), f"Table {table}."
    lines = [f"**{head_text}**{cap[len(head_text):]}", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join([":---", ":---:"] + ["---:"] * (3 * len(METRICS))) + "|"]
    for r in rows:
        cells = [r.title.replace("|", "\\|"), r.schedule]
        for m, *_ in METRICS:
            cells += [_cell(r.paper[m], r.paper_gain.get(m)), _ours_cell(r, m), _signed(r.delta[m])]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        lines += ["", f"Sources: `{Path(rows[0].source).parent.parent}/<row>/metrics.json` (ours), "
                      "`params/rows.yaml` (paper)."]
    return "\n".join(lines).rstrip() + "\n"


CSV_METRIC_FIELDS = ("paper", "ours", "delta", "paper_gain", "ours_gain")


def csv_fields() -> list[str]:
    fields = ["table", "row", "title", "schedule", "status", "note", "gain_over", "dataset", "scale", "source"]
    for m, *_ in METRICS:
        fields += [f"{m}_{f}" for f in CSV_METRIC_FIELDS]
    return fields


def to_csv(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=csv_fields(), lineterminator="\n")
    w.writeheader()
    for r in rows:
        rec: dict[str, Any] = {"table": table, "row": r.row, "title": r.title, "schedule": r.schedule,
                               "status": r.status, "note": r.note, "gain_over": r.gain_over or "",
                               "dataset": r.meta.get("dataset", params["dataset"] if r.status == OK else ""),
                               "scale": r.meta.get("scale", params["scale"] if r.status == OK else ""),
                               "source": r.source}
        for m, *_ in METRICS:
            for f in CSV_METRIC_FIELDS:
                v = getattr(r, f)[m]
                rec[f"{m}_{f}"] = "" if v is None else f"{v:.1f}"
        w.writerow(rec)
    return buf.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text).replace(DASH, "--").replace("Δ", r"$\Delta$")


def _tex_cell(value: float | None, gain: float | None) -> str:
    if value is None:
        return "--"
    return f"{value:.1f}" + (f" {{\\scriptsize({gain:+.1f})}}" if gain is not None else "")


def to_latex(params: Mapping[str, Any], table: int, rows: list[RowResult]) -> str:
    n = len(METRICS)
    lines = [
        "% Generated by `python -m seesaw_lvis report` from results/eval/<row>/metrics.json; do not edit.",
        "% Needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        "\\scriptsize",
        "\\setlength{\\tabcolsep}{3pt}",
        f"\\caption{{{tex_escape(caption(params, table, rows))}}}",
        f"\\label{{tab:table{table}}}",
        "\\begin{tabular}{ll" + "rrr" * n + "}",
        "\\toprule",
        " & & " + " & ".join(f"\\multicolumn{{3}}{{c}}{{{tex_escape(label)}}}" for *_, label in METRICS) + " \\\\",
        " ".join(f"\\cmidrule(lr){{{3 + 3 * k}-{5 + 3 * k}}}" for k in range(n)),
        "Row & Schedule & " + " & ".join(["paper & ours & $\\Delta$"] * n) + " \\\\",
        "\\midrule",
    ]
    for r in rows:
        cells = [tex_escape(r.title), tex_escape(r.schedule)]
        for m, *_ in METRICS:
            ours = _tex_cell(r.ours[m], r.ours_gain.get(m)) if r.status == OK else f"\\textit{{{r.status}}}"
            delta = "--" if r.delta[m] is None else f"{r.delta[m]:+.1f}"
            cells += [_tex_cell(r.paper[m], r.paper_gain.get(m)), ours, delta]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def table_paths(out_dir: Path, table: int) -> dict[str, Path]:
    return {ext: Path(out_dir) / "tables" / f"table{table}.{ext}" for ext in ("md", "csv", "tex")}


def write(params: Mapping[str, Any], out_dir: Path, tables: tuple[int, ...] = (1, 2)) -> tuple[list[Path], dict]:
    """Write tables/table<N>.{md,csv,tex} under ``out_dir``; returns (paths, {table: rows})."""
    written: list[Path] = []
    built: dict[int, list[RowResult]] = {}
    for t in tables:
        rows = build(params, t)
        built[t] = rows
        paths = table_paths(out_dir, t)
        written.append(write_text(paths["md"], to_markdown(params, t, rows)))
        written.append(write_text(paths["csv"], to_csv(params, t, rows)))
        written.append(write_text(paths["tex"], to_latex(params, t, rows)))
    return written, built
