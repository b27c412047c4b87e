"""The pipeline through a real one-node SLURM cluster with the `slurm` profile.

`scripts/slurm-test-cluster.sh up` brings the cluster up on this machine (installing Debian's
slurm, slurmdbd, munge, mariadb and postgresql packages when missing; idempotent, so a running
cluster costs about a second). An MLflow tracking server (`scripts/mlflow-server.sh`) on the
cluster's PostgreSQL is started as on a real cluster, and the jobs log to it over HTTP.
`snakemake --profile slurm all` then submits every rule with sbatch, and sacct must list each
rule's job as COMPLETED: proof that the jobs ran through SLURM, not locally; the server must hold
one run per (row, seed) with its training curves and evaluation metrics.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, mlflow_server, set_params

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "slurm-test-cluster.sh"
PROFILE = REPO / "slurm"
ACCOUNT = os.environ.get("SLURM_TEST_ACCOUNT", "test")  # registered by the script
PARTITION = "debug"  # the script's only partition, the cluster's default
EXIT_CANNOT_INSTALL = 3  # the script's exit status when apt cannot install the packages
# Seconds for the whole `snakemake --profile slurm all` (every job waits for the executor's
# status checks; jobs share this machine's cores).
PIPELINE_TIMEOUT = int(os.environ.get("SLURM_TEST_PIPELINE_TIMEOUT", "3600"))


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The one-node test cluster, up (left running afterwards: `... down` stops it)."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (it installs packages and starts daemons)")
    proc = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    if proc.returncode == EXIT_CANNOT_INSTALL:
        pytest.skip(f"apt cannot install the SLURM packages:\n{out[-2000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT.name} up failed ({proc.returncode}):\n{out[-4000:]}", pytrace=False)


@pytest.fixture
def tracking_server(slurm_cluster, tmp_path):
    """scripts/mlflow-server.sh on the cluster's PostgreSQL database, on a free port, reached by
    the jobs through this node's name (as jobs on other nodes would); yields its URI."""
    db = subprocess.run(["bash", str(SCRIPT), "mlflow-db-uri"], capture_output=True, text=True, timeout=60)
    assert db.returncode == 0 and db.stdout.startswith("postgresql"), db.stderr
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    env = {**job_env(), "MLFLOW_BACKEND_STORE_URI": db.stdout.strip(), "MLFLOW_PORT": str(port),
           "MLFLOW_SERVER_DIR": str(tmp_path / "mlflow-server"), "MLFLOW_SERVER_WORKERS": "2",
           "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "mlflow-artifacts")}

    server = mlflow_server(tmp_path, env)
    out = server("start")
    uri = f"http://{socket.gethostname()}:{port}"
    assert "export MLFLOW_TRACKING_URI=http://" in out, out
    yield uri
    server("stop")


def job_env() -> dict[str, str]:
    """The submitting environment: the test's interpreter first on PATH, so that jobs (sbatch
    --export=ALL) run `python -m seesaw_lvis` with it; the account through the profile's
    variable; the partition left to the profile's default (the cluster's default partition)."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # .venv/bin (not resolved: that is the venv)
    env["PATH"] = os.pathsep.join([bindir, *[p for p in env.get("PATH", "").split(os.pathsep) if p != bindir]])
    env["SEESAW_SLURM_ACCOUNT"] = ACCOUNT
    env.pop("SEESAW_SLURM_PARTITION", None)
    return env


def sacct_jobs(start: str, name: str) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "Comment", "State", "Account", "Partition", "ExitCode"]
    proc = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", start, "--name", name, "-o", ",".join(fields)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines() if line]


def test_jobs_get_the_submitting_path(slurm_cluster, tmp_path):
    """sbatch exports the submitting environment: a job finds the test's python first."""
    out = tmp_path / "which.txt"
    env = job_env()
    proc = subprocess.run(
        ["sbatch", "--wait", "--parsable", "-o", str(tmp_path / "job.log"), "-D", str(tmp_path),
         "--wrap", f"command -v python > {out}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text().strip() == str(Path(sys.executable).parent / "python")


def job_stats(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table: how many jobs of each rule the run planned."""
    table = re.search(r"^job\s+count\n-+\s+-+\n(.*?)^total\s", log, re.M | re.S)
    assert table, log
    return {rule: int(n) for rule, n in re.findall(r"^(\S+)\s+(\d+)$", table.group(1), re.M)}


@pytest.mark.timeout(PIPELINE_TIMEOUT + 1200)  # + a fresh machine's apt-get install
def test_pipeline_runs_through_slurm(slurm_cluster, tracking_server, pipeline_copy):
    # One row at one seed end to end keeps the test to ~6 jobs (the executor polls every 40 s):
    # data, stats, the ResNet pretraining, train and evaluate of Table 1's first row, and the
    # report; the local end-to-end test (tests/pipeline/test_pipeline_ci.py) runs every row at
    # both of its seeds.
    # (the seed lists name only rows that exist: Table 2's are gone from this copy)
    # The server's database outlives the test: this run's own experiment.
    experiment = f"slurm_test_{uuid.uuid4().hex[:8]}"
    # (no ablation grid: its row is gone from this copy)
    set_params(pipeline_copy, scale="ci", seeds={s: {"default": [0]} for s in ("full", "mini", "ci")}, sweep=None,
               tracking={"uri": "sqlite:///mlflow.db", "experiment": experiment,
                         "artifact_location": "mlartifacts", "retry_interval_s": 60})
    rows_file = pipeline_copy / "params/rows.yaml"
    rows = yaml.safe_load(rows_file.read_text())["rows"]
    rows_file.write_text(yaml.safe_dump({"rows": {"t1_ce": rows["t1_ce"]}}, sort_keys=False))
    shutil.copytree(PROFILE, pipeline_copy / "slurm")
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))

    cmd = [sys.executable, "-m", "snakemake", "--profile", str(pipeline_copy / "slurm"), "all"]
    t0 = time.monotonic()
    env = {**job_env(), "MLFLOW_TRACKING_URI": tracking_server}   # sbatch exports it to every job
    proc = subprocess.run(cmd, cwd=pipeline_copy, env=env, capture_output=True, text=True,
                          timeout=PIPELINE_TIMEOUT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake --profile slurm all failed ({proc.returncode}):\n{log}"
    print(f"snakemake --profile slurm all: {time.monotonic() - t0:.0f} s")

    # The outputs of `all`: there, and up to date.
    for name in ("data/synthetic/annotations/lvis_v1_train.json", "results/stats/class_freq.json",
                 "reports/figures/class_frequency.png", "results/pretrain/resnet/backbone.pth",
                 "results/train/t1_ce/seed0/final.pth", "results/eval/t1_ce/seed0/metrics.json",
                 "reports/tables/table1.md"):
        assert (pipeline_copy / name).stat().st_size > 0, name
    again = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all"], cwd=pipeline_copy,
                           env=job_env(), capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout + again.stderr

    # Every job but the local ones (`all`) went through sbatch, once...
    planned = job_stats(log)
    local = set(re.findall(r"^localrule (\S+):", log, re.M))
    remote = {rule: n for rule, n in planned.items() if rule not in local}
    assert {"data", "stats", "pretrain_resnet", "train_t1_ce_s0", "evaluate_t1_ce_s0", "report"} <= remote.keys(), \
        planned
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: .*?/slurm_logs/rule_([^/]+)/",
                                log))
    assert Counter(submitted.values()) == Counter(remote), (submitted, planned, local)

    # ... and SLURM's accounting lists each of those jobs, under its rule, as COMPLETED.
    for _ in range(30):  # slurmctld hands finished jobs to slurmdbd asynchronously
        jobs = {j["JobID"]: j for j in sacct_jobs(start, run_id(log))}
        if all(jobs.get(jid, {}).get("State") == "COMPLETED" for jid in submitted):
            break
        time.sleep(1)
    for jid, rule in submitted.items():
        job = jobs.get(jid)
        assert job is not None, f"sacct lists no job {jid} (rule {rule}): {jobs}"
        assert re.fullmatch(rf"rule_{re.escape(rule)}(_wildcards_.*)?", job["Comment"]), job
        assert (job["State"], job["ExitCode"]) == ("COMPLETED", "0:0"), job
        assert (job["Account"], job["Partition"]) == (ACCOUNT, PARTITION), job

    # Every job logged to the tracking server over HTTP: one run per (row, seed), with its
    # training curve and its evaluation, and one for the pretraining; nothing went to SQLite or
    # stayed in a spool.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_server)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} on {tracking_server}"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert sorted((r.data.tags["kind"], r.data.tags["row"]) for r in runs) == [
        ("pretrain", "pretrain_resnet"), ("train", "t1_ce")], [r.data.tags for r in runs]
    (run,) = [r for r in runs if r.data.tags["row"] == "t1_ce"]
    assert run.data.tags["seed"] == "0" and run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) > 1
    for key in ("bbox_AP", "segm_AP"):
        assert key in run.data.metrics, (key, run.data.metrics)
    assert not (pipeline_copy / "mlflow.db").exists()
    assert not list((pipeline_copy / "results").rglob("mlflow_spool.jsonl"))


def run_id(log: str) -> str:
    """The SLURM executor's run id: the name of every job it submitted in this run."""
    match = re.search(r"SLURM run ID: (\S+)", log)
    assert match, log
    return match.group(1)
