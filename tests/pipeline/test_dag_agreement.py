"""Snakemake and DVC see the same pipeline: same stages, commands, dependencies and outputs."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import run

pytestmark = pytest.mark.pipeline


def snakemake_stages(repo, with_priority: bool = False, targets: tuple[str, ...] = ("all", "sweep")) -> dict[str, dict]:
    """Every job of the targets (the tables and the grid), from a forced dry run with shell
    commands printed (cmd, outs, deps; and the job's scheduling priority when asked)."""
    out = run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--cores", "1", *targets], repo).stdout
    stages, job = {}, None
    for line in out.splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            job = {"rule": line[5:-1], "outs": set(), "deps": set(), "wildcards": "", "priority": 0}
        elif job is not None and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            if key in ("input", "output"):
                job["deps" if key == "input" else "outs"] = set(value.split(", "))
            elif key == "wildcards":
                job["wildcards"] = value
            elif key == "priority":
                job["priority"] = int(value)
        elif job is not None and line.startswith("Shell command: "):
            if line == "Shell command: None":  # a target-only rule such as `all`
                job = None
                continue
            name = job["rule"] + (f"@{job['wildcards']}" if job["wildcards"] else "")
            stages[name] = {"cmd": " ".join(line[len("Shell command: "):].split()),
                            "outs": job["outs"], "deps": job["deps"]}
            if with_priority:
                stages[name]["priority"] = job["priority"]
            job = None
    assert stages, out
    return stages


def dvc_stages(repo) -> dict[str, dict]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return {s.name: {"cmd": " ".join(s.cmd.split()),
                         "outs": {o.def_path for o in s.outs},
                         "deps": {d.def_path for d in s.deps if not isinstance(d, ParamsDependency)}}
                for s in r.index.stages}


def test_committed_dvc_yaml_is_current(repo_root, default_params):
    """dvc.yaml is generated from the stage list: the committed file must match it."""
    import os

    from seesaw_lvis.workflow.dvc import render

    cwd = os.getcwd()
    os.chdir(repo_root)
    try:
        assert (repo_root / "dvc.yaml").read_text() == render(default_params), \
            "dvc.yaml is stale: run `python -m seesaw_lvis dvc-yaml`"
    finally:
        os.chdir(cwd)


def test_snakemake_and_dvc_declare_the_same_stages(pipeline_copy):
    smk, dvc = snakemake_stages(pipeline_copy), dvc_stages(pipeline_copy)
    rows = __import__("yaml").safe_load((pipeline_copy / "params/rows.yaml").read_text())["rows"]
    assert set(smk) == set(dvc)
    assert {"data", "stats", "pretrain_resnet", "pretrain_resnest"} | {f"evaluate_{r}_s0" for r in rows} <= set(smk)
    assert {"train_t1_ce_s1", "evaluate_t1_ce_s2", "train_t2_seesaw_s1"} <= set(smk)  # mini's replicates
    assert "train_t2_seesaw_s2" not in smk
    assert {"train_sweep_p0_q0_s1", "evaluate_sweep_p1p2_q3_s0", "sweep"} <= set(smk)   # the grid's
    assert "train_sweep_p0_q0_s2" not in smk
    for name in smk:
        assert smk[name]["cmd"] == dvc[name]["cmd"], name
        assert smk[name]["outs"] == dvc[name]["outs"], name
        assert smk[name]["deps"] == dvc[name]["deps"], name


def test_all_leaves_the_grid_to_its_own_target(pipeline_copy):
    """`snakemake all` (make demo) plans no stage of the sweep; `snakemake sweep` plans the
    grid and what it needs, not the tables' report."""
    tables = snakemake_stages(pipeline_copy, targets=("all",))
    grid = snakemake_stages(pipeline_copy, targets=("sweep",))
    assert not any("sweep" in name for name in tables) and "report" in tables
    assert "report" not in grid and {"data", "stats", "pretrain_resnet", "sweep"} <= set(grid)
    assert not any(n.startswith(("train_t", "evaluate_t")) for n in grid)
    assert len([n for n in grid if n.startswith("train_sweep_")]) == 16 * 2


def test_both_dags_follow_the_params_file(pipeline_copy):
    from tests.conftest import set_params

    set_params(pipeline_copy, paths={"data": "d2", "results": "r2", "reports": "p2", "logs": "l2"})
    run([sys.executable, "-m", "seesaw_lvis", "dvc-yaml"], pipeline_copy)
    smk, dvc = snakemake_stages(pipeline_copy), dvc_stages(pipeline_copy)
    assert smk["data"]["outs"] == dvc["data"]["outs"] == {"d2/synthetic"}
    assert smk == dvc


def test_snakemake_starts_the_longest_chain_first(pipeline_copy, default_params):
    """Priorities (longest remaining chain) reach Snakemake; the chain to the TTA evaluation,
    the longest at every scale, outranks every other training and evaluation."""
    from seesaw_lvis.workflow.stages import stages

    listed = {s.name: s for s in stages(default_params)}
    planned = snakemake_stages(pipeline_copy, with_priority=True)
    assert {n: planned[n]["priority"] for n in listed} == {n: s.priority for n, s in listed.items()}
    producer = {o: s.name for s in listed.values() for o in s.all_outs}
    for s in listed.values():
        for dep in s.deps:
            if dep in producer:  # a stage outranks every stage that needs it
                assert listed[producer[dep]].priority > s.priority, (producer[dep], s.name)
    tta = next(r for r, row in default_params["rows"].items() if row["kind"] == "tta")
    chain = {f"evaluate_{tta}_s0"}
    parent = default_params["rows"][tta]["from"]
    while parent:
        chain.add(f"train_{parent}_s0")
        parent = default_params["rows"][parent]["from"]
    others = [s.priority for n, s in listed.items() if n not in chain and n.startswith(("train_", "evaluate_"))]
    assert min(listed[n].priority for n in chain) > max(others), chain
