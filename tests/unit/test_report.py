"""The report stage: Tables 1-2 and the figures, rebuilt from (fake) evaluation files only."""
from __future__ import annotations

import copy
import csv
import json
import logging
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from seesaw_lvis.io import read_checkpoint
from seesaw_lvis.report import build, plots, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# 12 categories, image counts falling off geometrically, LVIS's groups (r <= 10 < c <= 100 < f)
IMAGE_COUNTS = [300, 150, 90, 60, 40, 25, 15, 11, 8, 5, 2, 1]


def _group(n: int) -> str:
    return "r" if n <= 10 else "c" if n <= 100 else "f"


# --------------------------------------------------------------------------------------------
# fake pipeline files
# --------------------------------------------------------------------------------------------
@pytest.fixture
def params(default_params, tmp_path) -> dict:
    """The default params with every path inside tmp_path."""
    p = copy.deepcopy(default_params)
    p["paths"] = {k: str(tmp_path / v) for k, v in p["paths"].items()}
    return p


def write_stats(params: dict) -> Path:
    cats = [{"category_id": k + 1, "name": f"cat{k + 1}", "instance_count": 2 * n, "image_count": n,
             "image_fraction": n / 500, "frequency": _group(n), "repeat_factor": 1.0}
            for k, n in enumerate(IMAGE_COUNTS)]
    path = build.stats_path(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"num_images": 500, "groups": {g: sum(_group(n) == g for n in IMAGE_COUNTS)
                                                              for g in "rcf"}, "categories": cats}))
    return path


def metrics_doc(params: dict, row: str, base: float, seed: int = 0, **meta) -> dict:
    """A metrics.json document; every number derived from ``base`` (a fraction)."""
    def block(offset: float) -> dict:
        b = {k: round(base + offset + 0.01 * i, 4) for i, k in enumerate(
            ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"))}
        b["per_class"] = {str(k + 1): (None if k == 5 else round(min(1.0, base + 0.03 * (11 - k) * (k % 3)), 4))
                          for k in range(len(IMAGE_COUNTS))}
        return b
    m = {"row": row, "seed": seed, "checkpoint": "x.pth", "gt": "val.json", "scale": params["scale"],
         "dataset": params["dataset"]}
    m.update(meta)
    return {"bbox": block(0.012), "segm": block(0.0), "meta": m}


def write_metrics(params: dict, row: str, doc: dict, seed: int = 0) -> Path:
    path = tables.metrics_path(params, row, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def write_curves(params: dict, row: str, runs: dict[str, list[tuple[int, float]]]) -> None:
    """A row's curves.json as the train stage writes it: every run merged by iteration."""
    by_iter = {}
    for _, points in sorted(runs.items()):
        for it, loss in points:
            by_iter[it] = {"iter": it, "lr": 0.02, "loss": loss, "loss_cls": loss / 2}
    d = build.train_dir(params, row)
    d.mkdir(parents=True, exist_ok=True)
    (d / "curves.json").write_text(json.dumps([by_iter[i] for i in sorted(by_iter)]))


SEESAW_CONFIG = """model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                type='DistSeesawLoss', p=0.8, q=2.0, num_classes=12, loss_weight=1.0))))
"""


def write_checkpoint(params: dict, row: str, stages: list[list[int]] | None, config: str | None) -> Path:
    import torch

    d = build.train_dir(params, row)
    d.mkdir(parents=True, exist_ok=True)
    sd = {"roi_head.bbox_head.fc_cls.weight": torch.zeros(3, 2)}
    for k, counts in enumerate(stages or []):
        key = "roi_head.bbox_head.loss_cls.cum_samples" if len(stages) == 1 else \
            f"roi_head.bbox_head.{k}.loss_cls.cum_samples"
        sd[key] = torch.tensor(counts, dtype=torch.long)
    torch.save({"meta": {"epoch": 0, "iter": 10}, "state_dict": sd}, d / "final.pth")
    if config is not None:
        (d / "config.py").write_text(config)
    return d / "final.pth"


# counts per class (12 foreground + background), roughly proportional to the image counts
COUNTS = [3 * n for n in IMAGE_COUNTS] + [5000]


def populate(params: dict, skip: tuple[str, ...] = ("t2_carafe", "t2_tta")) -> None:
    """Fake outputs of every stage, except the evaluation of the rows in ``skip``."""
    write_stats(params)
    for k, row in enumerate(params["rows"]):
        if row not in skip:
            write_metrics(params, row, metrics_doc(params, row, 0.05 + 0.02 * k))
    for k, row in enumerate(build.trained_rows(params)):
        write_curves(params, row, {"20240101_000000": [(i, 3.0 - 0.02 * i + 0.001 * k) for i in range(1, 60, 5)]})
        seesaw = row in build.mitigation_rows(params)
        write_checkpoint(params, row, [COUNTS] * (3 if row.startswith("t2") else 1) if seesaw else None,
                         SEESAW_CONFIG if seesaw else None)


def read_csv(path: Path) -> dict[str, dict]:
    with path.open() as f:
        return {r["row"]: r for r in csv.DictReader(f)}


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def test_table_numbers_equal_the_files(params):
    docs = {}
    for k, row in enumerate(["t1_ce", "t1_seesaw", "t2_mask_rcnn", "t2_syncbn", "t2_tsd"]):
        docs[row] = metrics_doc(params, row, 0.1234 + 0.0417 * k)
        write_metrics(params, row, docs[row])
    written, _ = tables.write(params, Path(params["paths"]["reports"]))
    assert sorted(map(str, written)) == sorted(o for o in build.report_outputs(params) if "/tables/" in o)
    for t in (1, 2):
        got = read_csv(Path(params["paths"]["reports"]) / "tables" / f"table{t}.csv")
        assert list(got) == [r for r, v in params["rows"].items() if v["table"] == t]  # paper order
        for row, rec in got.items():
            assert rec["title"] == params["rows"][row]["title"]
            for metric, iou, key, _ in tables.METRICS:
                paper = params["rows"][row]["paper"].get(metric)   # none for bbox APr
                assert (rec[f"{metric}_paper"] == "") if paper is None else float(rec[f"{metric}_paper"]) == paper
                if row in docs:
                    assert rec["status"] == "ok"
                    assert float(rec[f"{metric}_ours"]) == round(docs[row][iou][key] * 100, 1)
                else:
                    assert rec["status"] == "not run" and rec[f"{metric}_ours"] == ""
                    assert rec[f"{metric}_delta"] == "" and rec[f"{metric}_ours_gain"] == ""


def test_missing_row_shows_not_run_never_zero(params):
    write_metrics(params, "t1_ce", metrics_doc(params, "t1_ce", 0.2))
    tables.write(params, Path(params["paths"]["reports"]))
    md = (Path(params["paths"]["reports"]) / "tables" / "table1.md").read_text()
    eql = next(line for line in md.splitlines() if line.startswith("| Random + EQL"))
    cells = [c.strip() for c in eql.strip("|").split("|")]
    assert cells[5::3] == ["not run"] * len(tables.METRICS)   # every "ours" cell
    assert "0.0" not in "".join(cells[5::3] + cells[6::3])
    assert "Not run (no metrics.json): t1_eql, t1_seesaw" in md
    tex = (Path(params["paths"]["reports"]) / "tables" / "table1.tex").read_text()
    assert "\\textit{not run}" in tex and "Random + EQL" in tex


def test_delta_and_gains(params):
    # Table 1: gains over the first row (as the paper: Seesaw 24.3 (+7.4) = 24.3 - 16.9)
    for row, ap in (("t1_ce", 0.1612), ("t1_eql", 0.2), ("t1_seesaw", 0.2549)):
        doc = metrics_doc(params, row, 0.1)
        doc["bbox"]["AP"], doc["segm"]["AP"] = ap, ap - 0.01
        write_metrics(params, row, doc)
    # Table 2: step gains over the previous row; t2_carafe not run
    for row, ap in (("t2_mask_rcnn", 0.10), ("t2_syncbn", 0.1234), ("t2_htc_lite", 0.3)):
        doc = metrics_doc(params, row, 0.1)
        doc["bbox"]["AP"] = ap
        write_metrics(params, row, doc)
    _, built = tables.write(params, Path(params["paths"]["reports"]))
    t1 = {r.row: r for r in built[1]}
    assert t1["t1_ce"].ours["bbox_AP"] == 16.1 and t1["t1_ce"].delta["bbox_AP"] == -0.8
    assert t1["t1_ce"].ours_gain["bbox_AP"] is None and t1["t1_ce"].paper_gain["bbox_AP"] is None
    assert t1["t1_eql"].delta["bbox_AP"] == 0.7                      # 20.0 - 19.3
    assert t1["t1_eql"].ours_gain["bbox_AP"] == 3.9                  # 20.0 - 16.1
    assert t1["t1_eql"].paper_gain["bbox_AP"] == 2.4                 # the paper's "(+2.4)"
    assert t1["t1_seesaw"].ours_gain["bbox_AP"] == 9.4               # 25.5 - 16.1, over the first row
    assert t1["t1_seesaw"].paper_gain["bbox_AP"] == 7.4
    assert t1["t1_seesaw"].paper_gain["mask_AP"] == 7.3 and t1["t1_seesaw"].paper_gain["APr"] == 13.0
    assert t1["t1_seesaw"].ours_gain["mask_AP"] == 9.4               # 24.5 - 15.1
    t2 = {r.row: r for r in built[2]}
    assert t2["t2_syncbn"].ours_gain["bbox_AP"] == 2.3               # 12.3 - 10.0, step gain
    assert t2["t2_syncbn"].paper_gain["bbox_AP"] == 0.1              # the paper's "(+0.1)"
    assert t2["t2_syncbn"].delta["bbox_AP"] == -7.9                  # 12.3 - 20.2
    assert t2["t2_carafe"].status == "not run" and t2["t2_carafe"].ours_gain["bbox_AP"] is None
    assert t2["t2_htc_lite"].ours_gain["bbox_AP"] is None            # previous row not run
    assert t2["t2_htc_lite"].paper_gain["bbox_AP"] == 3.2            # 23.6 - 20.4
    assert t2["t2_tsd"].paper_gain["mask_AP"] == 1.6
    rec = read_csv(Path(params["paths"]["reports"]) / "tables" / "table2.csv")["t2_syncbn"]
    assert (rec["bbox_AP_ours"], rec["bbox_AP_delta"], rec["bbox_AP_ours_gain"], rec["bbox_AP_paper_gain"]) == \
        ("12.3", "-7.9", "2.3", "0.1")
    md = (Path(params["paths"]["reports"]) / "tables" / "table1.md").read_text()
    assert "| Random + Seesaw | 1x | – | 1 | 24.3 (+7.4) | 25.5 | +9.4 |" in md   # no iterations in the file


def test_tables_rebuild_when_a_file_changes(params):
    out = Path(params["paths"]["reports"])
    write_metrics(params, "t2_tsd", metrics_doc(params, "t2_tsd", 0.2))
    tables.write(params, out)
    before = (out / "tables" / "table2.csv").read_text()
    assert read_csv(out / "tables" / "table2.csv")["t2_tsd"]["mask_AP_ours"] == "20.0"
    doc = metrics_doc(params, "t2_tsd", 0.2)
    doc["segm"]["AP"] = 0.4321
    write_metrics(params, "t2_tsd", doc)
    tables.write(params, out)
    assert (out / "tables" / "table2.csv").read_text() != before
    assert read_csv(out / "tables" / "table2.csv")["t2_tsd"]["mask_AP_ours"] == "43.2"
    assert "| + TSD | 2x | – | 1 | 25.5 (+1.9) | 21.2 | – | – | 27.2 | – | 23.5 (+1.6) | 43.2 | – |" in \
        (out / "tables" / "table2.md").read_text()
    tables.metrics_path(params, "t2_tsd", 0).unlink()
    tables.write(params, out)
    assert read_csv(out / "tables" / "table2.csv")["t2_tsd"]["status"] == "not run"


def test_metrics_of_another_scale_are_stale_not_mixed(params):
    write_metrics(params, "t1_ce", metrics_doc(params, "t1_ce", 0.2))
    write_metrics(params, "t1_eql", metrics_doc(params, "t1_eql", 0.3, scale="ci"))
    write_metrics(params, "t1_seesaw", metrics_doc(params, "t1_seesaw", 0.3, dataset="lvis_v1"))
    _, built = tables.write(params, Path(params["paths"]["reports"]))
    rows = {r.row: r for r in built[1]}
    assert rows["t1_eql"].status == "stale" and "scale=ci (params: mini)" in rows["t1_eql"].note
    assert rows["t1_seesaw"].status == "stale" and "dataset=lvis_v1" in rows["t1_seesaw"].note
    assert all(v is None for v in rows["t1_eql"].ours.values())
    assert rows["t1_seesaw"].ours_gain["bbox_AP"] is None
    out = Path(params["paths"]["reports"]) / "tables"
    rec = read_csv(out / "table1.csv")["t1_eql"]
    assert rec["status"] == "stale" and rec["bbox_AP_ours"] == "" and rec["scale"] == "ci"
    md = (out / "table1.md").read_text()
    assert "t1_eql: seed 0: metrics.json is for scale=ci (params: mini); not shown." in md
    assert "dataset 'synthetic', scale 'mini'" in md


def test_caption_and_latex_are_well_formed(params):
    populate(params)
    tables.write(params, Path(params["paths"]["reports"]))
    tex = (Path(params["paths"]["reports"]) / "tables" / "table2.tex").read_text()
    body = tex[tex.index("\\midrule"):tex.index("\\bottomrule")]
    assert all(line.count("&") == 21 for line in body.splitlines()[1:])   # 4 + 3 x 6 columns
    assert "\\begin{tabular}" in tex and "\\end{table}" in tex and "_" not in body
    assert "t2\\_carafe" in tex                                           # escaped in the caption


def test_iterations_column_is_read_from_the_metrics_files(params):
    """Iters: each row's trained iterations from its seeds' metrics.json (the evaluate stage
    writes them), distinct values joined; '–' for a file without them or a row not run."""
    write_metrics(params, "t1_ce", metrics_doc(params, "t1_ce", 0.2, trained_iterations=797))
    write_metrics(params, "t1_ce", metrics_doc(params, "t1_ce", 0.2, seed=1, trained_iterations=797), seed=1)
    write_metrics(params, "t1_eql", metrics_doc(params, "t1_eql", 0.2))   # an older file: no iterations
    write_metrics(params, "t1_seesaw", metrics_doc(params, "t1_seesaw", 0.2, trained_iterations=60))
    write_metrics(params, "t1_seesaw", metrics_doc(params, "t1_seesaw", 0.2, seed=2, trained_iterations=797),
                  seed=2)
    out = Path(params["paths"]["reports"])
    tables.write(params, out, (1,))
    md = (out / "tables" / "table1.md").read_text()
    head = next(x for x in md.splitlines() if x.startswith("| Row"))
    assert [c.strip() for c in head.strip("|").split("|")][:4] == ["Row", "Schedule", "Iters", "Seeds"]
    iters = {x.split("|")[1].strip(): x.split("|")[3].strip() for x in md.splitlines() if x.startswith("| Random")}
    assert iters == {"Random + CE": "797", "Random + EQL": tables.DASH, "Random + Seesaw": "60/797"}
    got = read_csv(out / "tables" / "table1.csv")
    assert {r: v["iterations"] for r, v in got.items()} == {"t1_ce": "797", "t1_eql": "", "t1_seesaw": "60 797"}
    assert "trained_iterations" in md   # the caption says where the column comes from


def test_checkpoint_iterations_reads_mmengine_meta(tmp_path):
    from seesaw_lvis.io import checkpoint_iterations
    import torch

    torch.save({"meta": {"epoch": 0, "iter": 60}, "state_dict": {"w": torch.zeros(2)}}, tmp_path / "a.pth")
    torch.save({"w": torch.zeros(2)}, tmp_path / "b.pth")                     # a bare state dict
    assert checkpoint_iterations(tmp_path / "a.pth") == 60
    assert checkpoint_iterations(tmp_path / "b.pth") is None


# --------------------------------------------------------------------------------------------
# inputs, outputs, figures
# --------------------------------------------------------------------------------------------
class _Reads:
    """Every file opened for reading under ``root`` (Python audit hook 'open')."""

    active: "_Reads | None" = None
    installed = False

    def __init__(self, root: Path):
        self.root = str(root)
        self.paths: set[str] = set()

    @classmethod
    def hook(cls, event, args):
        rec = cls.active
        if rec is None or event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
        reading = ("r" in mode and "+" not in mode) if isinstance(mode, str) else \
            (flags & os.O_ACCMODE) == os.O_RDONLY
        if reading and os.path.abspath(path).startswith(rec.root):
            rec.paths.add(os.path.abspath(path))

    def __enter__(self):
        if not _Reads.installed:
            sys.addaudithook(_Reads.hook)
            _Reads.installed = True
        _Reads.active = self
        return self

    def __exit__(self, *exc):
        _Reads.active = None


@pytest.fixture
def full_run(params, tmp_path, caplog):
    populate(params)
    # decoys the report must not read
    write_metrics(params, "not_a_row", metrics_doc(params, "not_a_row", 0.9))
    (build.train_dir(params, "t1_ce") / "other.json").write_text("{}")
    (build.stats_path(params).parent / "class_freq.csv").write_text("x\n")
    with _Reads(tmp_path) as reads, caplog.at_level(logging.WARNING):
        written = build.run(params, Path(params["paths"]["reports"]))
    return written, reads.paths, caplog.text


def _check_images(paths) -> None:
    for p in map(Path, paths):
        assert p.is_file() and p.stat().st_size > 1000, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG_MAGIC, p
        elif p.suffix == ".svg":
            assert ET.parse(p).getroot().tag.endswith("svg"), p


def test_run_writes_exactly_the_declared_outputs(params, full_run):
    written, _, _ = full_run
    declared = build.report_outputs(params)
    assert sorted(map(str, written)) == sorted(declared)
    _check_images(o for o in declared if "/figures/" in o)
    leftovers = [p for p in Path(params["paths"]["reports"]).rglob("*") if p.is_file() and str(p) not in declared]
    assert leftovers == []                                  # no temporary file left behind


def test_run_reads_only_declared_inputs(params, full_run):
    _, reads, _ = full_run
    declared = {os.path.abspath(p) for p in build.report_inputs(params)}
    out = os.path.abspath(params["paths"]["reports"])
    undeclared = {p for p in reads if p not in declared and not p.startswith(out)}
    assert undeclared == set()
    assert any(p.endswith("t2_seesaw/seed0/final.pth") for p in reads)   # the mitigation plot's counts
    assert not any("not_a_row" in p or p.endswith(".csv") for p in reads)


def test_every_output_exists_with_nothing_run(params, caplog):
    with caplog.at_level(logging.WARNING):
        written = build.run(params, Path(params["paths"]["reports"]))
    assert sorted(map(str, written)) == sorted(build.report_outputs(params))
    _check_images(o for o in build.report_outputs(params) if "/figures/" in o)
    md = (Path(params["paths"]["reports"]) / "tables" / "table2.md").read_text()
    assert md.count("not run") >= 5 * 12
    for name in ("per_class_ap_vs_frequency", "table2_steps", "group_ap_bars", "training_curves",
                 "seesaw_mitigation"):
        assert f"{name}: no data" in caplog.text
        svg = (Path(params["paths"]["reports"]) / "figures" / f"{name}.svg").read_text()
        assert "no data" in svg                          # the message is in the figure itself


def test_inputs_outputs_and_captions_are_named_from_params(params, repo_root):
    res, rep = params["paths"]["results"], params["paths"]["reports"]
    inputs = build.report_inputs(params)
    assert f"{res}/stats/class_freq.json" in inputs
    from seesaw_lvis.params import row_seeds

    for r in params["rows"]:
        for s in row_seeds(params, r):  # every replicate's metrics and its bootstrap matches
            assert all(f"{res}/eval/{r}/seed{s}/{f}" in inputs
                       for f in ("metrics.json", "matches.bbox.npz", "matches.segm.npz")), (r, s)
    assert row_seeds(params, "t1_ce") == [0, 1, 2] and row_seeds(params, "t2_carafe") == [0]
    assert not any("/train/t2_tta/" in i for i in inputs)          # a TTA row is not trained
    assert f"{res}/train/t2_seesaw/seed0/config.py" in inputs and f"{res}/train/t1_seesaw/seed0/config.py" in inputs
    assert len(inputs) == len(set(inputs))
    outputs = build.report_outputs(params)
    assert len(outputs) == 6 + 1 + 10 and all(o.startswith(rep + "/") for o in outputs)
    assert f"{rep}/tables/effects.json" in outputs
    for out, flags in build.report_captions(params).items():
        assert out in outputs
        assert (repo_root / flags["caption"]).is_file(), flags["caption"]


# --------------------------------------------------------------------------------------------
# the pieces
# --------------------------------------------------------------------------------------------
def test_mitigation_matrix_equals_the_formula():
    counts = [100.0, 10.0, 1.0, 10.0, 0.0]                     # 0 is clamped to 1, as the loss does
    p = 0.8
    s = plots.mitigation_matrix(counts, p)
    n = [max(c, 1.0) for c in counts]
    for i in range(5):
        for j in range(5):
            expected = (n[j] / n[i]) ** p if n[i] > n[j] else 1.0
            assert s[i, j] == pytest.approx(expected, rel=1e-12)
    assert s[0, 2] == pytest.approx(0.01 ** 0.8) and s[2, 0] == 1.0 and s[1, 3] == 1.0
    assert np.all(np.diag(s) == 1.0) and np.all((s > 0) & (s <= 1))


def test_checkpoint_counts_and_p(params):
    stages = [[1, 2, 3, 9], [4, 5, 6, 9], [7, 8, 9, 99]]       # last entry: background
    ckpt = write_checkpoint(params, "t2_seesaw", stages, SEESAW_CONFIG)
    counts, key = build.cum_samples(read_checkpoint(ckpt))
    assert key == "roi_head.bbox_head.2.loss_cls.cum_samples"   # the last cascade stage
    assert counts.tolist() == [7.0, 8.0, 9.0]
    assert build.seesaw_p(SEESAW_CONFIG) == 0.8
    assert build.seesaw_p("model = {'loss_cls': {'type': 'SeesawLoss', 'p': 0.7}}") == 0.7
    assert build.seesaw_p("model = dict(loss_cls=dict(type='CrossEntropyLoss'))") is None
    m = build._mitigation_data(params)
    assert m["row"] == "t2_seesaw" and m["p"] == 0.8 and m["counts"].tolist() == [7.0, 8.0, 9.0]
    # without t2_seesaw's checkpoint, t1_seesaw's counts are used
    ckpt.unlink()
    write_checkpoint(params, "t1_seesaw", [[5, 1, 0, 3]], SEESAW_CONFIG.replace("p=0.8", "p=0.5"))
    m = build._mitigation_data(params)
    assert m["row"] == "t1_seesaw" and m["p"] == 0.5 and m["counts"].tolist() == [5.0, 1.0, 0.0]


def test_training_curves_come_from_the_train_stages_curves_file(params):
    write_curves(params, "t1_ce", {"run": [(1, 5.0), (2, 4.0), (3, 2.5), (4, 2.0)]})
    iters, loss = build.read_curves(build.train_dir(params, "t1_ce"))
    assert iters == [1, 2, 3, 4] and loss == [5.0, 4.0, 2.5, 2.0]
    assert build.read_curves(build.train_dir(params, "t1_eql")) == ([], [])


def test_engine_merges_resumed_runs_into_curves(tmp_path):
    from seesaw_lvis.engine.train import training_curves

    for stamp, points in {"20240101_000000": [(1, 5.0), (2, 4.0), (3, 3.0)],
                          "20240102_000000": [(3, 2.5), (4, 2.0)]}.items():  # resumed at 3
        d = tmp_path / stamp / "vis_data"
        d.mkdir(parents=True)
        lines = [json.dumps({"lr": 0.02, "loss": loss, "iter": it, "step": it}) for it, loss in points]
        lines.insert(1, json.dumps({"coco/bbox_mAP": 0.1, "step": 5}))  # a non-training line
        (d / "scalars.json").write_text("\n".join(lines) + "\n")
    curves = training_curves(tmp_path)
    assert [c["iter"] for c in curves] == [1, 2, 3, 4]
    assert [c["loss"] for c in curves] == [5.0, 4.0, 2.5, 2.0]  # the newer run wins


# --------------------------------------------------------------------------------------------
# replicates: real evaluations, bootstrap intervals in the tables and effects.json
# --------------------------------------------------------------------------------------------
def _evaluate_run(params: dict, row: str, seed: int, gt: dict, dets: list) -> None:
    """What the evaluate stage writes for one (row, seed): metrics.json and the matches."""
    from seesaw_lvis.evaluation.lvis_eval import evaluate_with_matches

    metrics, matches = evaluate_with_matches(gt, dets)
    metrics["meta"] = {"row": row, "seed": seed, "scale": params["scale"], "dataset": params["dataset"]}
    write_metrics(params, row, metrics, seed)
    for iou, path in tables.match_paths(params, row, seed).items():
        matches[iou].save(path)


def _with_perfect(gt: dict, dets: list, cats: set[int]) -> list:
    """``dets`` plus an exact copy (box and mask) of every GT of ``cats`` at score 1: those
    categories' AP can only go up (a true positive ranked first for every object)."""
    from seesaw_lvis.evaluation.lvis_eval import _to_rle

    size = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    extra = []
    for a in gt["annotations"]:
        if a["category_id"] in cats:
            rle = _to_rle(a["segmentation"], *size[a["image_id"]])
            rle = {"size": list(rle["size"]), "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes)
                   else rle["counts"]}
            extra.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
                          "score": 1.0, "segmentation": rle})
    return [*dets, *extra]


def test_replicated_rows_get_mean_std_and_paired_intervals(params):
    """Table 1 at 3 seeds on real evaluations: CE and EQL identical (zero-width interval at 0),
    Seesaw's rare categories better ranked (its APr gain's interval above 0)."""
    from seesaw_lvis.bench.eval import make_detections, make_gt
    from seesaw_lvis.params import row_seeds

    params["report"] = {**params["report"], "bootstrap_samples": 200}
    gt = make_gt(40, seed=5, num_cats=24)
    rare = {c["id"] for c in gt["categories"] if c["frequency"] == "r"}
    assert row_seeds(params, "t1_ce") == [0, 1, 2]
    for seed in (0, 1, 2):
        dets = make_detections(gt, 40, seed=seed)
        _evaluate_run(params, "t1_ce", seed, gt, dets)
        _evaluate_run(params, "t1_eql", seed, gt, dets)
        _evaluate_run(params, "t1_seesaw", seed, gt, _with_perfect(gt, dets, rare))
    written, built = tables.write(params, Path(params["paths"]["reports"]), (1,))
    t1 = {r.row: r for r in built[1]}
    assert all(r.n_seeds == 3 and r.status == "ok" for r in t1.values())
    assert t1["t1_eql"].ours_gain["APr"] == 0.0 and t1["t1_eql"].gain_ci["APr"] == (0.0, 0.0)
    assert t1["t1_eql"].gain_seeds == 3
    doc = json.loads(tables.effects_path(Path(params["paths"]["reports"])).read_text())
    ce, seesaw = doc["rows"]["t1_ce"], doc["rows"]["t1_seesaw"]
    assert ce["reference"] is None and seesaw["reference"] == "t1_ce" and ce["seeds"] == [0, 1, 2]
    for m in ("bbox_AP", "mask_AP", "APr", "APc", "APf"):
        s = ce["metrics"][m]
        assert s["n_seeds"] == 3 and s["std"] is not None and 0 <= s["mean"] <= 100
        assert s["val_se"] > 0  # a run's metric varies over the val resamples
        d = seesaw["difference"][m]
        assert d["ci_low"] <= d["mean"] <= d["ci_high"] and d["n_seeds"] == 3, (m, d)
    # a perfect detection of every rare object lifts APr; the frequent categories are untouched
    d = seesaw["difference"]["APr"]
    assert d["ci_low"] > 0, d
    assert seesaw["difference"]["APf"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_seeds": 3,
                                           "seeds": [0, 1, 2]}
    md = (Path(params["paths"]["reports"]) / "tables" / "table1.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| Random + Seesaw"))
    lo, hi = t1["t1_seesaw"].gain_ci["APr"]
    assert f"{t1['t1_seesaw'].ours_gain['APr']:+.1f} [{lo:+.1f}, {hi:+.1f}]" in line
    assert f"{t1['t1_ce'].ours['APr']:.1f} ± {t1['t1_ce'].ours_std['APr']:.1f}" in md
