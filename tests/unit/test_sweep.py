"""The Seesaw ablation grid: its cells as rows, their configs and stages, and its report."""
from __future__ import annotations

import copy
import csv
import io
from pathlib import Path

import pytest

from seesaw_lvis import sweep
from seesaw_lvis.params import row_seeds
from seesaw_lvis.report import sweep as sweep_report
from tests.unit.test_report import _evaluate_run, _with_perfect

GRID = {"p": [0.0, 0.8], "q": [0.0, 2.0]}


@pytest.fixture
def params(default_params, tmp_path) -> dict:
    """mini params with a 2 x 2 grid over seeds 0, 1, every path inside tmp_path."""
    p = copy.deepcopy(default_params)
    p["paths"] = {k: str(tmp_path / v) for k, v in p["paths"].items()}
    p["sweep"] = {**p["sweep"], "grid": {**p["sweep"]["grid"], "mini": GRID},
                  "seeds": {**p["sweep"]["seeds"], "mini": [0, 1]}}
    p["report"] = {**p["report"], "bootstrap_samples": 200}
    return p


def test_cells_are_rows_of_their_own(params):
    cells = sweep.cells(params)
    assert [(c.p, c.q) for c in cells] == [(0.0, 0.0), (0.0, 2.0), (0.8, 0.0), (0.8, 2.0)]
    assert [c.row_id for c in cells] == ["sweep_p0_q0", "sweep_p0_q2", "sweep_p0p8_q0", "sweep_p0p8_q2"]
    assert sweep.control(params) == cells[0]
    assert sweep.cell_row_id(1.2, 0.5) == "sweep_p1p2_q0p5"
    cp = sweep.with_cells(params)
    assert set(params["rows"]) < set(cp["rows"]) and "sweep_p0_q0" not in params["rows"]  # params untouched
    row = cp["rows"]["sweep_p0p8_q0"]
    assert row["seesaw"] == {"p": 0.8, "q": 0.0} and row["sweep_of"] == "t1_seesaw" and row["table"] == 1
    assert row_seeds(cp, "sweep_p0p8_q0") == [0, 1]
    assert row_seeds(cp, "t1_seesaw") == row_seeds(params, "t1_seesaw")   # the table rows keep theirs


def test_the_rows_own_factors_are_read_from_its_config(params, repo_root, monkeypatch):
    from seesaw_lvis.configs.resolve import seesaw_factors

    monkeypatch.chdir(repo_root)
    assert sweep_report.own_factors(params) == (0.8, 2.0)
    assert sweep.check_row(params) == "t1_seesaw"
    params["sweep"]["row"] = "t2_seesaw"
    assert sweep_report.own_factors(params) == (0.8, 2.0) and sweep.check_row(params) == "t2_seesaw"
    assert seesaw_factors("x = dict(type='SeesawLoss', p=0.7)") == (0.7, None)
    assert seesaw_factors("x = dict(type='CrossEntropyLoss')") is None


@pytest.mark.parametrize("row, message", [("t1_ce", "no Seesaw loss"), ("t9_none", "not a row"),
                                          ("t2_tta", "tta row")])
def test_a_row_that_cannot_be_swept_is_named(params, repo_root, monkeypatch, row, message):
    from seesaw_lvis.workflow.stages import stages

    monkeypatch.chdir(repo_root)
    params["sweep"]["row"] = row
    with pytest.raises(ValueError, match=message):
        sweep.check_row(params)
    with pytest.raises(ValueError, match=message):  # before any job starts
        stages(params)


def test_grid_values_naming_one_cell_are_refused(params):
    params["sweep"]["grid"]["mini"] = {"p": [0.8, 0.80000001], "q": [2.0]}
    with pytest.raises(ValueError, match=r"sweep\.grid\.mini: values that name the same cell \(sweep_p0p8_q2\)"):
        sweep.cells(params)


def test_a_cell_resolves_to_the_row_with_its_factors_only(params):
    """The cell's config is the row's with every Seesaw loss's p and q set, nothing else;
    its MLflow run is tagged with p, q and the row it sweeps."""
    from seesaw_lvis.configs import resolve
    from seesaw_lvis.engine.runs import run_identity

    cp = sweep.with_cells(params)
    row = resolve.load(cp, "t1_seesaw", seed=1).to_dict()
    cell = resolve.load(cp, "sweep_p0_q2", seed=1).to_dict()
    loss = cell["model"]["roi_head"]["bbox_head"]["loss_cls"]
    assert (loss["p"], loss["q"]) == (0.0, 2.0)
    loss.update(p=0.8, q=2.0)
    assert cell == row
    ident = run_identity(cp, "sweep_p0p8_q0", resolve.load(cp, "sweep_p0p8_q0", seed=0))
    assert ident.tags["p"] == "0.8" and ident.tags["q"] == "0" and ident.tags["seed"] == "0"
    assert ident.tags["sweep_of"] == "t1_seesaw" and ident.tags["row"] == "sweep_p0p8_q0"
    assert run_identity(cp, "t1_seesaw", resolve.load(cp, "t1_seesaw", seed=0)).tags["p"] == "0.8"
    # a cascade: every stage's loss
    params["sweep"]["row"] = "t2_seesaw"
    cp = sweep.with_cells(params)
    heads = resolve.load(cp, "sweep_p0p8_q0", seed=0).model.roi_head.bbox_head
    assert [(h.loss_cls.p, h.loss_cls.q) for h in heads] == [(0.8, 0.0)] * 3


def test_sweep_stages_are_their_own_target(params, repo_root, monkeypatch):
    from seesaw_lvis.workflow.stages import sinks, stages

    monkeypatch.chdir(repo_root)
    listed = {s.name: s for s in stages(params)}
    grid = {n for n, s in listed.items() if s.target == "sweep"}
    assert grid == {f"{k}_{c.row_id}_s{seed}" for c in sweep.cells(params) for seed in (0, 1)
                    for k in ("train", "evaluate")} | {"sweep"}
    assert listed["sweep"].outs == sweep_report.outputs(params)
    assert set(sweep_report.inputs(params)) <= set(listed["sweep"].deps)
    train = listed["train_sweep_p0p8_q0_s1"]
    assert "--row sweep_p0p8_q0 --seed 1" in train.cmd
    assert "rows.t1_seesaw" in train.params and "sweep.row" in train.params
    assert "src/seesaw_lvis/configs/t1_03_seesaw.py" in train.deps and "src/seesaw_lvis/sweep.py" in train.deps
    # the grid's code is no dep of the tables' stages, nor the other way round
    assert not any(d in ("src/seesaw_lvis/sweep.py", "src/seesaw_lvis/report/sweep.py")
                   for s in listed.values() if s.target == "all" for d in s.deps)
    assert "src/seesaw_lvis/report/sweep.py" in listed["sweep"].deps
    # nothing of the table stages reads the grid
    assert not any(d.startswith(params["paths"]["results"] + "/eval/sweep_") for s in listed.values()
                   if s.target == "all" for d in s.deps)
    # the heads DVC commits with --with-deps once their target is built
    assert sinks(list(listed.values())) == ["report", "sweep"]
    del params["sweep"]
    assert not any(s.target == "sweep" for s in stages(params))
    assert sinks(stages(params)) == ["report"]


def test_report_means_intervals_and_control_differences(params, repo_root, monkeypatch, caplog):
    """Real evaluations of a 2 x 2 grid: p = 0 cells detect as the control, p = 0.8 cells
    also find every rare object; cell (0.8, 0) is not run. Control-equal cells: zero
    difference, zero-width interval; the rare gain's interval lies above 0."""
    from seesaw_lvis.bench.eval import make_detections, make_gt

    monkeypatch.chdir(repo_root)
    gt = make_gt(40, seed=5, num_cats=24)
    rare = {c["id"] for c in gt["categories"] if c["frequency"] == "r"}
    cp = sweep.with_cells(params)
    for seed in (0, 1):
        dets = make_detections(gt, 40, seed=seed)
        _evaluate_run(cp, "sweep_p0_q0", seed, gt, dets)
        _evaluate_run(cp, "sweep_p0_q2", seed, gt, dets)
        _evaluate_run(cp, "sweep_p0p8_q2", seed, gt, _with_perfect(gt, dets, rare))
    out = Path(params["paths"]["reports"])
    written = sweep_report.run(params, out)
    assert sorted(map(str, written)) == sorted(sweep_report.outputs(params))
    assert "1 of 4 cells not evaluated: p=0.8, q=0" in caplog.text
    rows = {(r["p"], r["q"]): r for r in csv.DictReader(io.StringIO((out / "tables/sweep.csv").read_text()))}
    assert list(rows) == [("0", "0"), ("0", "2"), ("0.8", "0"), ("0.8", "2")]
    assert rows["0.8", "0"]["status"] == "not run" and rows["0.8", "0"]["APr_mean"] == ""
    same, better = rows["0", "2"], rows["0.8", "2"]
    for m in ("mask_AP", "APr", "bbox_AP"):
        assert float(same[f"{m}_vs_control_mean"]) == 0.0
        assert float(same[f"{m}_vs_control_ci_low"]) == float(same[f"{m}_vs_control_ci_high"]) == 0.0
        for k in ("mean", "ci_low", "ci_high"):   # identical runs: identical means and intervals
            assert same[f"{m}_{k}"] == rows["0", "0"][f"{m}_{k}"], (m, k)
        assert same["n_seeds"] == "2"
        assert float(same[f"{m}_ci_low"]) < float(same[f"{m}_ci_high"]), m   # val resamples spread a mean
    assert float(better["APr_vs_control_ci_low"]) > 0
    assert float(better["APf_vs_control_mean"]) == 0.0
    md = (out / "tables/sweep.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| 0.8 | 2 |"))
    assert f"+{float(better['APr_vs_control_mean']):.1f} [" in line
    assert "| 0.8 | 0 | – | not run |" in md
    tex = (out / "tables/sweep.tex").read_text()
    assert tex.count("\\\\") == 5 and "\\toprule" in tex


def test_every_output_exists_with_nothing_run(params, repo_root, monkeypatch, caplog):
    monkeypatch.chdir(repo_root)
    written = sweep_report.run(params, Path(params["paths"]["reports"]))
    assert all(Path(p).stat().st_size > 0 for p in written)
    assert "4 of 4 cells not evaluated" in caplog.text
    assert "no data" in caplog.text


def test_no_sweep_section_is_a_clear_error(params):
    del params["sweep"]
    assert sweep.cells(params) == [] and sweep.with_cells(params)["rows"] == params["rows"]
    with pytest.raises(ValueError, match="no 'sweep:' section"):
        sweep_report.run(params, Path(params["paths"]["reports"]))


def test_bad_grid_values_are_named(default_params):
    from seesaw_lvis.params import ParamsError, validate

    bad = copy.deepcopy(default_params)
    bad["sweep"]["grid"]["mini"]["p"] = [0.0, -0.4]
    with pytest.raises(ParamsError, match=r"sweep\.grid\.mini\.p\.1"):
        validate(bad)
    bad = copy.deepcopy(default_params)
    bad["sweep"]["seeds"]["ci"] = []
    with pytest.raises(ParamsError, match=r"sweep\.seeds\.ci"):
        validate(bad)


def test_a_cell_jobs_lineage_finds_its_stage_once(params, repo_root, monkeypatch):
    """A train job of a cell holds the cells as rows (with_cells): the stage list it rebuilds
    for its lineage is the same list, each cell's stages once."""
    from seesaw_lvis.workflow.stages import stages

    monkeypatch.chdir(repo_root)
    plain = [(s.name, s.deps, s.params) for s in stages(params)]
    assert plain == [(s.name, s.deps, s.params) for s in stages(sweep.with_cells(params))]
    assert len({n for n, *_ in plain}) == len(plain)
