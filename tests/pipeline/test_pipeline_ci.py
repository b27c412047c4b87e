"""The whole pipeline end to end at `ci` scale, through Snakemake and DVC, in a fresh copy.

One (module-scoped) run of `snakemake all` feeds every check: every row trained and
evaluated; DVC sees everything up to date; `dvc repro` then runs nothing and neither does
`snakemake -n`; editing one row's config re-runs only that row and its descendants, under
both tools, and a comment-only edit makes `dvc repro` re-run exactly what Snakemake plans
(lineage digests, seesaw_lvis.workflow.lineage); concurrent DVC commits leave a valid
dvc.lock; `dvc metrics show` lists every row; pushed to a directory remote and to an S3-compatible server
(moto, on 127.0.0.1), a fresh clone's `python -m seesaw_lvis pull` leaves both tools nothing to
do, a partial pull only that row's stages, and an unreachable remote fails, changing nothing.

The tests share one repository, in this order: each leaves both tools with nothing to do.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PIPELINE_FILES, copy_pipeline, run, set_params

pytestmark = [pytest.mark.pipeline, pytest.mark.slow, pytest.mark.timeout(2400)]

SMALL_DATA = dict(num_classes=10, train_images=48, val_images=16, image_size=64, max_images_per_class=40,
                  min_val_images_per_class=1, max_instances_per_image=4, neg_fraction=0.5,
                  not_exhaustive_prob=0.02)


def snakemake(repo: Path, *args: str, check: bool = True, timeout: float = 1800):
    return run([sys.executable, "-m", "snakemake", "--cores", "2", *args], repo, timeout=timeout, check=check)


def dvc(repo: Path, *args: str, timeout: float = 600):
    return run([sys.executable, "-m", "dvc", *args], repo, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def planned_jobs(repo: Path) -> set[str]:
    """What Snakemake would run to bring both targets, the tables (all) and the grid (sweep), up to date."""
    out = snakemake(repo, "-n", "all", "sweep", "--quiet", "rules").stdout   # --quiet takes a list: last
    jobs = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "all", "job"):
            jobs.add(parts[0])
    return jobs


@pytest.fixture(scope="module")
def finished_pipeline(tmp_path_factory):
    repo = copy_pipeline(tmp_path_factory.mktemp("e2e") / "repo")
    params = yaml.safe_load((repo / "params/pipeline.yaml").read_text())
    set_params(repo, scale="ci", synthetic={**params["synthetic"], **SMALL_DATA})
    run([sys.executable, "-m", "seesaw_lvis", "dvc-yaml"], repo)
    proc = snakemake(repo, "all")
    # `all` (make demo) builds nothing of the grid; `snakemake sweep` then builds only the grid
    assert not list((repo / "results/eval").glob("sweep_*")) and not (repo / "reports/tables/sweep.md").exists()
    # ... and DVC recorded what it built: the tables' target is up to date, the grid not yet run
    assert "up to date" in dvc(repo, "status", "--with-deps", "report").stdout
    assert "train_sweep_p0_q0_s0:" in dvc(repo, "status").stdout
    before = (repo / "reports/tables/table1.md").stat().st_mtime
    sweep_proc = snakemake(repo, "sweep")
    assert (repo / "reports/tables/table1.md").stat().st_mtime == before, "the tables' report re-ran"
    return repo, (proc, sweep_proc)


def rows_of(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "params/rows.yaml").read_text())["rows"])


def runs_of(repo: Path) -> list[tuple[str, int]]:
    """Every (row, replicate seed) of the copy's params, the sweep's cells among the rows."""
    from seesaw_lvis.params import load, row_seeds
    from seesaw_lvis.sweep import with_cells

    params = with_cells(load(repo / "params/pipeline.yaml"))
    return [(row, seed) for row in params["rows"] for seed in row_seeds(params, row)]


# The ci grid: 2 x 2 cells of t1_seesaw, one seed each.
SWEEP_CELLS = ("sweep_p0_q0", "sweep_p0_q2", "sweep_p0p8_q0", "sweep_p0p8_q2")
SWEEP_JOBS = {f"{k}_{c}_s0" for c in SWEEP_CELLS for k in ("train", "evaluate")} | {"sweep"}
# What an edit of t1_seesaw's config re-runs: both seeds of the row, the report, and the grid,
# every cell of which is that config.
SEESAW_JOBS = {"train_t1_seesaw_s0", "evaluate_t1_seesaw_s0", "train_t1_seesaw_s1", "evaluate_t1_seesaw_s1",
               "report"} | SWEEP_JOBS


def test_every_row_is_trained_and_evaluated_at_each_seed(finished_pipeline):
    repo, _ = finished_pipeline
    runs = runs_of(repo)
    assert {s for r, s in runs if r.startswith("t1_")} == {0, 1}  # two replicate seeds at ci
    max_iters = yaml.safe_load((repo / "params/scales.yaml").read_text())["scales"]["ci"]["max_iters"]
    for row, seed in runs:
        metrics = json.loads((repo / f"results/eval/{row}/seed{seed}/metrics.json").read_text())
        for iou in ("bbox", "segm"):
            assert 0.0 <= metrics[iou]["AP"] <= 1.0, (row, iou)
            assert "per_class" in metrics[iou]
            assert (repo / f"results/eval/{row}/seed{seed}/matches.{iou}.npz").is_file()
        assert metrics["meta"]["scale"] == "ci" and metrics["meta"]["row"] == row
        assert metrics["meta"]["seed"] == seed
        # the weights' own iteration count (the tables' Iters): every row at ci trains its cap
        assert metrics["meta"]["trained_iterations"] == max_iters, (row, seed)
    # A TTA row evaluates its parent's weights and trains nothing.
    assert not (repo / "results/train/t2_tta").exists()
    curves = json.loads((repo / "results/train/t1_ce/seed1/curves.json").read_text())
    assert curves and all("loss" in c and "lr" in c for c in curves)
    # every row starts from its family's pretrain stage
    for family in ("resnet", "resnest"):
        assert (repo / f"results/pretrain/{family}/backbone.pth").is_file()
        assert "held_out_accuracy" in json.loads((repo / f"results/pretrain/{family}/metrics.json").read_text())


def test_bench_jobs_times_the_run_from_its_logs(finished_pipeline, tmp_path):
    """`bench jobs` on the `all` run's Snakemake log (the fixture's first): every job timed, and
    every training and evaluation job's own log read for its time outside its work."""
    repo, _ = finished_pipeline
    log = sorted((repo / ".snakemake" / "log").glob("*.snakemake.log"))[0]
    out = tmp_path / "jobs.json"
    run([sys.executable, "-m", "seesaw_lvis", "bench", "jobs", "--params", "params/pipeline.yaml",
         "--snakemake-log", str(log), "--out", str(out)], repo)
    result = json.loads(out.read_text())
    names = {j["stage"] for j in result["jobs"]}
    tta = {r for r, v in yaml.safe_load((repo / "params/rows.yaml").read_text())["rows"].items()
           if v["kind"] == "tta"}   # evaluated, never trained
    assert {f"{k}_{r}_s{s}" for r, s in runs_of(repo) if not r.startswith("sweep_")
            for k in ("train", "evaluate") if not (k == "train" and r in tta)} <= names
    measured = {j["stage"] for j in result["jobs"] if "before_first_log_s" in j}
    assert {n for n in names if n.startswith(("train_", "evaluate_"))} <= measured
    assert all(0 <= j["before_first_log_s"] <= j["seconds"] + 1 and 0 <= j["after_last_log_s"] <= j["seconds"] + 1
               for j in result["jobs"] if j["stage"] in measured)
    assert 0 < result["outside_job_logs"]["share"] < 1 and result["unfinished"] == []


def test_report_carries_seeds_and_paired_intervals(finished_pipeline):
    repo, _ = finished_pipeline
    doc = json.loads((repo / "reports/tables/effects.json").read_text())
    for row in ("t1_eql", "t1_seesaw"):
        entry = doc["rows"][row]
        assert entry["seeds"] == [0, 1] and entry["reference"] == "t1_ce"
        for m in ("bbox_AP", "mask_AP", "APr", "APc", "APf"):
            d = entry["difference"][m]
            assert d["n_seeds"] == 2 and d["seeds"] == [0, 1]
            if entry["metrics"][m]["mean"] is None:  # a group without categories at ci (no frequent one)
                assert d["mean"] is None and entry["metrics"][m]["n_seeds"] == 0
                continue
            assert entry["metrics"][m]["n_seeds"] == 2
            # a percentile interval of a non-linear statistic need not hold the point estimate
            assert d["mean"] is not None and d["ci_low"] <= d["ci_high"], (row, m, d)
    assert doc["rows"]["t1_seesaw"]["metrics"]["bbox_AP"]["val_se"] is not None
    assert doc["rows"]["t2_syncbn"]["reference"] == "t2_mask_rcnn"
    md = (repo / "reports/tables/table1.md").read_text()
    assert "± " in md and "bootstrap CI" in md


def test_sweep_target_builds_the_grid_with_intervals(finished_pipeline):
    """`snakemake sweep` at ci: a 2 x 2 grid, one seed per cell, its table and figures; every
    cell is an MLflow run tagged with p, q and seed; the cell at t1_seesaw's own factors is
    t1_seesaw's config at its seed: the same numbers (training is deterministic)."""
    import csv

    import mlflow

    repo, _ = finished_pipeline
    rows = list(csv.DictReader((repo / "reports/tables/sweep.csv").open()))
    assert [(r["p"], r["q"]) for r in rows] == [("0", "0"), ("0", "2"), ("0.8", "0"), ("0.8", "2")]
    for r in rows:
        assert r["status"] == "ok" and r["n_seeds"] == "1", r
        assert float(r["bbox_AP_ci_low"]) <= float(r["bbox_AP_ci_high"]), r
        assert (r["bbox_AP_vs_control_mean"] == "") == (r["p"] == r["q"] == "0"), r  # the control: none
    for name in ("sweep_heatmaps", "sweep_marginals"):
        assert (repo / f"reports/figures/{name}.png").stat().st_size > 0
    assert "| 0.8 | 2 | 1 |" in (repo / "reports/tables/sweep.md").read_text()
    own = json.loads((repo / "results/eval/t1_seesaw/seed0/metrics.json").read_text())
    cell = json.loads((repo / "results/eval/sweep_p0p8_q2/seed0/metrics.json").read_text())
    assert cell["segm"]["AP"] == own["segm"]["AP"] and cell["bbox"]["AP"] == own["bbox"]["AP"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seesaw_lvis")
    runs = client.search_runs([exp.experiment_id], "tags.sweep_of = 't1_seesaw'", max_results=100)
    assert sorted((r.data.tags["p"], r.data.tags["q"], r.data.tags["seed"]) for r in runs) == \
        [("0", "0", "0"), ("0", "2", "0"), ("0.8", "0", "0"), ("0.8", "2", "0")]
    assert all("segm_APr" in r.data.metrics for r in runs)


def test_dvc_sees_snakemakes_work_and_repro_runs_nothing(finished_pipeline):
    repo, _ = finished_pipeline
    assert "up to date" in dvc(repo, "status").stdout
    out = dvc(repo, "repro").stdout
    assert "Running stage" not in out, out
    assert planned_jobs(repo) == set()


def test_every_stage_records_its_lineage(finished_pipeline):
    import torch

    from seesaw_lvis import compat

    repo, _ = finished_pipeline
    assert json.loads((repo / "data/synthetic/lineage.json").read_text())["stage"] == "data"
    assert json.loads((repo / "results/stats/class_freq.json").read_text())["lineage"]["stage"] == "stats"
    compat.install()
    final = torch.load(repo / "results/train/t1_seesaw/seed1/final.pth", map_location="cpu", weights_only=True)
    assert final["meta"]["lineage"]["stage"] == "train_t1_seesaw_s1"
    for row, seed in runs_of(repo):
        metrics = json.loads((repo / f"results/eval/{row}/seed{seed}/metrics.json").read_text())
        assert metrics["meta"]["lineage"]["stage"] == f"evaluate_{row}_s{seed}", row
    pre = torch.load(repo / "results/pretrain/resnet/backbone.pth", map_location="cpu", weights_only=True)
    assert pre["meta"]["lineage"]["stage"] == "pretrain_resnet"


def test_concurrent_commits_never_corrupt_dvc_lock(finished_pipeline):
    """commit_to_dvc (Snakemake's onsuccess/onerror) from 4 processes at once, dvc.lock gone."""
    repo, _ = finished_pipeline
    (repo / "dvc.lock").unlink()
    script = ("from seesaw_lvis import params; from seesaw_lvis.workflow.dvc import commit_to_dvc; "
              "print(len(commit_to_dvc(params.load('params/pipeline.yaml'))))")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=repo, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outputs = [p.communicate(timeout=600) for p in procs]
    stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert int(out.split()[-1]) == len(stages), out  # every stage was up to date, all committed
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == stages
    assert all(entry.get("outs") and entry.get("deps") for entry in lock["stages"].values())
    assert "up to date" in dvc(repo, "status").stdout
    out = dvc(repo, "repro").stdout
    assert "Running stage" not in out, out
    assert planned_jobs(repo) == set()


def test_mlflow_has_one_run_per_row_with_curves_and_metrics(finished_pipeline):
    import mlflow

    repo, _ = finished_pipeline
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seesaw_lvis")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    pretrain = {r.data.tags["row"]: r for r in runs if r.data.tags.get("kind") == "pretrain"}
    assert set(pretrain) == {"pretrain_resnet", "pretrain_resnest"}
    assert all("pretrain_acc_shape" in r.data.metrics for r in pretrain.values())
    rows = [r for r in runs if r.data.tags.get("kind") != "pretrain"]
    by_run = {(r.data.tags["row"], int(r.data.tags["seed"])): r for r in rows}
    assert set(by_run) == set(runs_of(repo)) and len(rows) == len(by_run)  # one run per (row, seed)
    for key, r in by_run.items():
        assert {"table", "seed", "scale", "dataset", "config_hash", "git_commit"} <= set(r.data.tags), key
        assert r.data.tags["scale"] == "ci"
        assert {"segm_AP", "bbox_AP", "segm_APr"} <= set(r.data.metrics), key
    history = client.get_metric_history(by_run["t1_ce", 1].info.run_id, "loss")
    assert len(history) == 2  # both ci iterations of t1_ce, seed 1


def test_dvc_plots_show_renders_every_rows_training_curves(finished_pipeline, tmp_path):
    repo, _ = finished_pipeline
    from seesaw_lvis.params import load
    from seesaw_lvis.sweep import with_cells

    rows = with_cells(load(repo / "params/pipeline.yaml"))["rows"]
    trained = [f"{r}/seed{s}" for r, s in runs_of(repo) if rows[r]["kind"] != "tta"]
    shown = json.loads(dvc(repo, "plots", "show", "--json").stdout)
    plots = shown.get("data", shown)  # {plot id: [{"type": "vega", "content": ...}]}
    for row in trained:
        path = f"results/train/{row}/curves.json"
        assert path in plots, (path, sorted(plots)[:5])
        spec = json.dumps(plots[path])
        assert '"loss"' in spec and '"iter"' in spec, path
    html = tmp_path / "plots"
    dvc(repo, "plots", "show", "-o", str(html))
    index = (html / "index.html").read_text()
    assert all(f"results/train/{row}/curves.json" in index for row in trained)


def test_dvc_metrics_show_lists_every_row(finished_pipeline):
    repo, _ = finished_pipeline
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    for row, seed in runs_of(repo):
        path = f"results/eval/{row}/seed{seed}/summary.json"
        on_disk = json.loads((repo / f"results/eval/{row}/seed{seed}/metrics.json").read_text())
        for iou in ("bbox", "segm"):
            for key in ("AP", "APr", "APc", "APf"):
                if on_disk[iou][key] is not None:  # None where a group has no category
                    assert files[path]["data"][iou][key] == on_disk[iou][key], (row, iou, key)
            # the headline numbers only: no column per category, no provenance strings
            assert set(files[path]["data"][iou]) <= set(on_disk[iou]) - {"per_class"}, (row, iou)
        assert set(files[path]["data"]) == {"bbox", "segm"}, row


def test_snakemake_html_report_has_every_figure(finished_pipeline):
    repo, _ = finished_pipeline
    snakemake(repo, "--report", "reports/report.html")
    html = (repo / "reports/report.html").read_text(errors="replace")
    for name in ("table2_steps.png", "per_class_ap_vs_frequency.png", "seesaw_mitigation.png",
                 "training_curves.png", "group_ap_bars.png", "class_frequency.png", "table1.csv"):
        assert name in html, name


def test_one_rows_config_change_reruns_only_it_and_its_descendants(finished_pipeline):
    repo, _ = finished_pipeline
    cfg = repo / "src/seesaw_lvis/configs/t1_03_seesaw.py"
    original = cfg.read_text()
    try:
        cfg.write_text(original + "\n# a user's edit\n")
        assert planned_jobs(repo) == SEESAW_JOBS  # both seeds of the row and the grid, nothing else
        changed = dvc(repo, "status").stdout
        assert all(f"{j}:" in changed for j in SEESAW_JOBS - {"report", "sweep"}), changed
        others = [(r, s) for r, s in runs_of(repo) if r != "t1_seesaw" and r not in SWEEP_CELLS]
        assert not any(f"train_{r}_s{s}:" in changed or f"evaluate_{r}_s{s}:" in changed for r, s in others), \
            changed
    finally:
        cfg.write_text(original)
        os.utime(cfg, (0, 0))  # back to before the outputs: Snakemake sees nothing newer


def test_comment_only_edit_reruns_the_same_stages_under_both_tools(finished_pipeline):
    """The row retrains to byte-identical weights (resumed: the resolved config is the same),
    yet DVC re-runs its evaluation and the report, as Snakemake plans: final.pth carries the
    train stage's lineage, which the edit changed. The edit stays: both tools end clean."""
    import torch

    from seesaw_lvis import compat

    repo, _ = finished_pipeline
    cfg = repo / "src/seesaw_lvis/configs/t1_03_seesaw.py"
    final = repo / "results/train/t1_seesaw/seed0/final.pth"
    compat.install()
    before = torch.load(final, map_location="cpu", weights_only=True)
    cfg.write_text(cfg.read_text() + "\n# a comment-only edit: the resolved config stays the same\n")
    planned = planned_jobs(repo)
    assert planned == SEESAW_JOBS
    out = dvc(repo, "repro").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == planned, out
    assert "resuming from" in (repo / "logs/train/t1_seesaw_s0.log").read_text()
    after = torch.load(final, map_location="cpu", weights_only=True)
    assert after["meta"]["lineage"] != before["meta"]["lineage"]
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    # Afterwards neither tool has anything left to do.
    assert planned_jobs(repo) == set()
    assert "up to date" in dvc(repo, "status").stdout


def test_after_dvc_repro_snakemake_has_nothing_to_do(finished_pipeline):
    repo, _ = finished_pipeline
    cfg = repo / "src/seesaw_lvis/configs/t1_03_seesaw.py"
    text = cfg.read_text()
    assert "q=2.0" in text
    cfg.write_text(text.replace("q=2.0", "q=1.0"))  # a real change: the row retrains from scratch
    out = dvc(repo, "repro").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == SEESAW_JOBS, out
    assert planned_jobs(repo) == set()
    assert "up to date" in dvc(repo, "status").stdout
    table = (repo / "reports/tables/table1.csv").read_text()
    assert "Seesaw" in table
    assert list((repo / "results/train").glob("t1_seesaw/seed1/work.stale-*")), "old checkpoints kept aside"


# ---------------------------------------------------------------- sharing through a DVC remote
# The same finished repository, every test above done: push it, then pull into a fresh clone
# (the committed files only: no results, no DVC cache, no .snakemake), as a colleague would.

CLONE_FILES = (*PIPELINE_FILES, "dvc.lock", ".dvc/config")


def clone(repo: Path, dest: Path) -> Path:
    """What `git clone` of ``repo`` would hold: its committed files, written now (new mtimes, as
    git writes them), nothing it computed."""
    dest.mkdir(parents=True)
    for name in CLONE_FILES:
        src = repo / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                            copy_function=shutil.copyfile)
        else:
            shutil.copyfile(src, dest / name)
    run(["git", "init", "-q"], dest)
    return dest


def seesaw(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "seesaw_lvis", *args], repo, timeout=900, check=check)


def workspace(repo: Path) -> dict[str, float]:
    return {str(p.relative_to(repo)): p.stat().st_mtime for p in repo.rglob("*") if ".git" not in p.parts}


@pytest.fixture(scope="module")
def directory_remote(finished_pipeline, tmp_path_factory) -> Path:
    """The finished repository pushed to a local-directory remote (params dvc.remote)."""
    repo, _ = finished_pipeline
    remote = tmp_path_factory.mktemp("dvc-remote")
    set_params(repo, dvc={"remote": str(remote), "remote_options": {}, "cache_dir": None, "cache_shared": None,
                          "cache_type": None})
    seesaw(repo, "push")
    assert any(remote.rglob("*")), "nothing pushed"
    return remote


def test_pull_in_a_fresh_clone_leaves_both_tools_nothing_to_do(finished_pipeline, directory_remote, tmp_path):
    repo, _ = finished_pipeline
    other = clone(repo, tmp_path / "clone")
    seesaw(other, "pull")
    assert "up to date" in dvc(other, "status").stdout
    assert planned_jobs(other) == set()
    for row, seed in runs_of(repo):
        path = f"results/eval/{row}/seed{seed}/metrics.json"
        assert (other / path).read_bytes() == (repo / path).read_bytes(), path
    out = dvc(other, "repro").stdout
    assert "Running stage" not in out, out


def test_partial_pull_skips_only_that_rows_evaluation(finished_pipeline, directory_remote, tmp_path):
    repo, _ = finished_pipeline
    other = clone(repo, tmp_path / "clone")
    seesaw(other, "pull", "--stage", "evaluate_t1_ce_s0")
    planned = planned_jobs(other)
    pulled = {"data", "stats", "pretrain_resnet", "train_t1_ce_s0", "evaluate_t1_ce_s0"}
    assert not planned & pulled, planned & pulled
    assert {"evaluate_t1_ce_s1", "train_t1_seesaw_s0", "evaluate_t1_seesaw_s0", "pretrain_resnest", "report"} <= planned


def test_push_and_pull_through_an_s3_server(finished_pipeline, directory_remote, tmp_path, monkeypatch):
    """An S3-compatible server (moto's server mode) on 127.0.0.1 as the remote."""
    import boto3
    from moto.server import ThreadedMotoServer

    repo, _ = finished_pipeline
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)   # the dvc processes inherit them
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="seesaw")
        set_params(repo, dvc={"remote": "s3://seesaw/lvis", "remote_options": {"endpointurl": endpoint},
                              "cache_dir": None, "cache_shared": None, "cache_type": None})
        seesaw(repo, "push")
        listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="seesaw", Prefix="lvis/")
        assert listed["KeyCount"] > 0
        other = clone(repo, tmp_path / "clone")
        seesaw(other, "pull")
        assert "up to date" in dvc(other, "status").stdout
        assert planned_jobs(other) == set()
    finally:
        server.stop()


def test_pull_from_an_unreachable_remote_fails_and_changes_nothing(finished_pipeline, directory_remote, tmp_path):
    repo, _ = finished_pipeline
    other = clone(repo, tmp_path / "clone")
    gone = tmp_path / "no-such-remote"
    set_params(other, dvc={"remote": str(gone), "remote_options": {}, "cache_dir": None, "cache_shared": None,
                           "cache_type": None})
    before = workspace(other)
    proc = seesaw(other, "pull", check=False)
    assert proc.returncode == 1
    assert f"dvc fetch from {gone} failed; the workspace is unchanged" in proc.stderr, proc.stderr
    after = workspace(other)
    assert {k: v for k, v in after.items() if not k.startswith(".dvc")} == \
        {k: v for k, v in before.items() if not k.startswith(".dvc")}
