"""Lineage digests (seesaw_lvis.workflow.lineage): what changes them, what doesn't, and where
each stage records them.

Every test runs in a copy of the checkout (src/, workflow/, params/ at ci scale over a small
synthetic dataset), from its root as the stages do, so editing a config never touches the
repository itself.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, set_params

SMALL = dict(num_classes=8, train_images=24, val_images=6, image_size=64, max_images_per_class=20,
             min_val_images_per_class=1)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "\n# a comment-only edit\n")


def make_checkout(root: Path, data_root: Path) -> Path:
    for name in ("src", "workflow", "params"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    synthetic = yaml.safe_load((root / "params/pipeline.yaml").read_text())["synthetic"]
    set_params(root, scale="ci", dataset="synthetic", synthetic={**synthetic, **SMALL},
               paths={"data": str(data_root), "results": "results", "reports": "reports", "logs": "logs"})
    return root


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    """The small dataset the checkouts point at (read only; without a lineage.json)."""
    from seesaw_lvis import params as P
    from seesaw_lvis.data.synthetic import generate, spec_from_params

    root = tmp_path_factory.mktemp("lineage")
    checkout = make_checkout(root / "checkout", root / "data")
    params = P.load(checkout / "params/pipeline.yaml")
    generate(spec_from_params(params), P.dataset_dir(params))
    return root / "data"


@pytest.fixture
def checkout(tmp_path, shared_data, monkeypatch) -> dict:
    """Params of a fresh checkout copy, with the cwd at its root."""
    from seesaw_lvis import params as P

    make_checkout(tmp_path / "repo", shared_data)
    monkeypatch.chdir(tmp_path / "repo")
    return P.load("params/pipeline.yaml")


def lineages(params, *names: str) -> dict[str, dict]:
    from seesaw_lvis.workflow.lineage import stage_lineage

    return {n: stage_lineage(params, n) for n in names}


def test_unchanged_inputs_give_the_same_digest(checkout):
    from seesaw_lvis.workflow.lineage import stage_lineage

    names = ("data", "stats", "train_t1_seesaw_s0", "evaluate_t1_seesaw_s0", "evaluate_t2_tta_s0", "report")
    first, again = lineages(checkout, *names), lineages(copy.deepcopy(checkout), *names)
    assert first == again
    for name, lineage in first.items():
        assert set(lineage) == {"stage", "inputs_sha256", "params_sha256"} and lineage["stage"] == name
        json.dumps(lineage)  # goes into JSON outputs as is
    assert stage_lineage(checkout, "train_t2_tta_s0") is None  # a TTA row trains nothing: no such stage


def test_a_comment_only_edit_of_a_config_changes_its_stages_inputs_digest(checkout):
    names = ("stats", "train_t1_ce_s0", "train_t1_seesaw_s0", "evaluate_t1_seesaw_s0")
    before = lineages(checkout, *names)
    append_comment(Path("src/seesaw_lvis/configs/t1_03_seesaw.py"))
    after = lineages(checkout, *names)
    for name in ("train_t1_seesaw_s0", "evaluate_t1_seesaw_s0"):
        assert after[name]["inputs_sha256"] != before[name]["inputs_sha256"], name
        assert after[name]["params_sha256"] == before[name]["params_sha256"], name
    assert after["stats"] == before["stats"] and after["train_t1_ce_s0"] == before["train_t1_ce_s0"]


def test_a_comment_only_edit_of_code_changes_the_stages_running_it(checkout):
    before = lineages(checkout, "data", "stats", "train_t1_ce_s0")
    append_comment(Path("src/seesaw_lvis/data/stats.py"))
    after = lineages(checkout, "data", "stats", "train_t1_ce_s0")
    assert after["stats"]["inputs_sha256"] != before["stats"]["inputs_sha256"]
    assert after["data"] == before["data"] and after["train_t1_ce_s0"] == before["train_t1_ce_s0"]
    append_comment(Path("src/seesaw_lvis/workflow/lineage.py"))  # the lineage code is a dep too
    assert lineages(checkout, "data")["data"]["inputs_sha256"] != before["data"]["inputs_sha256"]


def test_a_param_value_change_changes_the_params_digest(checkout):
    names = ("data", "stats", "train_t1_ce_s0", "train_t1_seesaw_s0", "evaluate_t1_seesaw_s0")
    before = lineages(checkout, *names)
    changed = copy.deepcopy(checkout)
    changed["stats"]["rfs_threshold"] = 0.002
    after = lineages(changed, *names)
    assert after["stats"]["params_sha256"] != before["stats"]["params_sha256"]
    assert after["stats"]["inputs_sha256"] == before["stats"]["inputs_sha256"]
    assert all(after[n] == before[n] for n in names if n != "stats")

    changed = copy.deepcopy(checkout)
    changed["rows"]["t1_seesaw"]["title"] = "Random + Seesaw (renamed)"
    after = lineages(changed, *names)
    for name in ("train_t1_seesaw_s0", "evaluate_t1_seesaw_s0"):
        assert after[name]["params_sha256"] != before[name]["params_sha256"], name
    assert after["train_t1_ce_s0"] == before["train_t1_ce_s0"]


def test_a_directory_dep_is_digested_by_its_lineage_json_never_its_content(tmp_path):
    from seesaw_lvis.workflow.lineage import LINEAGE_FILE, dep_digest

    d = tmp_path / "dataset"
    (d / "train2017").mkdir(parents=True)
    image = d / "train2017/1.jpg"
    image.write_bytes(b"\x00" * 100)
    listing = dep_digest(d)  # no lineage.json: relative names and sizes
    image.write_bytes(b"\x01" * 100)
    assert dep_digest(d) == listing  # content not read
    (d / "train2017/2.jpg").write_bytes(b"\x00")
    assert dep_digest(d) != listing

    (d / LINEAGE_FILE).write_text('{"stage": "data", "inputs_sha256": "a", "params_sha256": "b"}\n')
    stamped = dep_digest(d)
    assert stamped.startswith("lineage:")
    (d / "train2017/3.jpg").write_bytes(b"\x00" * 7)
    assert dep_digest(d) == stamped  # with a lineage.json only it counts
    (d / LINEAGE_FILE).write_text('{"stage": "data", "inputs_sha256": "c", "params_sha256": "b"}\n')
    assert dep_digest(d) != stamped


def test_no_lineage_outside_the_pipeline(checkout, tmp_path, monkeypatch):
    from seesaw_lvis.workflow.lineage import stage_lineage

    assert stage_lineage(checkout, "evaluate_no_such_row") is None
    monkeypatch.chdir(tmp_path)  # not a checkout: no stage list
    assert stage_lineage(checkout, "train_t1_ce_s0") is None


def test_data_and_stats_verbs_record_their_lineage(checkout, tmp_path):
    from seesaw_lvis.cli import main
    from seesaw_lvis.io import read_json
    from seesaw_lvis.models.losses import load_class_freq
    from seesaw_lvis.params import dataset_dir
    from seesaw_lvis.workflow.lineage import stage_lineage

    set_params(Path("."), paths={**checkout["paths"], "data": str(tmp_path / "data")})
    params_file = "params/pipeline.yaml"
    from seesaw_lvis import params as P

    params = P.load(params_file)
    data = dataset_dir(params)
    assert main(["data", "--params", params_file, "--out", str(data), "--no-progress"]) == 0
    assert read_json(data / "lineage.json") == stage_lineage(params, "data")
    first = tree_digest(data)
    assert main(["data", "--params", params_file, "--out", str(data), "--no-progress"]) == 0
    assert tree_digest(data) == first  # deterministic, lineage.json included

    append_comment(Path("src/seesaw_lvis/data/synthetic.py"))
    assert main(["data", "--params", params_file, "--out", str(data), "--no-progress"]) == 0
    again = tree_digest(data)
    assert {k for k in first if first[k] != again.get(k)} == {"lineage.json"}  # same images and JSON

    assert main(["stats", "--params", params_file, "--train-json", str(data / "annotations/lvis_v1_train.json"),
                 "--out-dir", "results/stats", "--figures", "reports/figures"]) == 0
    stats = read_json("results/stats/class_freq.json")
    assert stats["lineage"] == stage_lineage(params, "stats")
    assert len(load_class_freq("results/stats/class_freq.json")) == params["synthetic"]["num_classes"]


@pytest.mark.slow  # three training processes (~70 s on 2 cores)
def test_final_pth_carries_the_train_stages_lineage(checkout):
    """As in the pipeline (one process per stage): a resumed run with nothing left to train
    writes the same final.pth; after a comment-only edit of the row config, the same weights
    with a new lineage."""
    import torch

    from seesaw_lvis import compat
    from seesaw_lvis.workflow.lineage import stage_lineage

    compat.install()
    out = Path("results/train/t1_ce/seed0")
    cmd = [sys.executable, "-m", "seesaw_lvis", "train", "--params", "params/pipeline.yaml", "--row", "t1_ce",
           "--out-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "seesaw_lvis", "pretrain", "--params", "params/pipeline.yaml",
                    "--family", "resnet", "--out-dir", "results/pretrain/resnet"],
                   check=True, capture_output=True, env=env, timeout=600)  # the weights t1_ce starts from

    def train() -> Path:
        subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)
        return out / "final.pth"

    final = train()
    ckpt = torch.load(final, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["lineage"] == stage_lineage(checkout, "train_t1_ce_s0")
    latest = torch.load((out / "work/last_checkpoint").read_text().strip(), map_location="cpu", weights_only=True)
    assert "lineage" not in latest["meta"]  # the work dir's checkpoints stay mmengine's own
    assert set(ckpt["meta"]) - {"lineage"} == set(latest["meta"])
    assert ckpt["state_dict"].keys() == latest["state_dict"].keys()
    assert all(torch.equal(ckpt["state_dict"][k], latest["state_dict"][k]) for k in ckpt["state_dict"])
    first = final.read_bytes()

    assert train().read_bytes() == first  # resumed at the end: nothing changed, nothing changes

    append_comment(Path("src/seesaw_lvis/configs/t1_01_mask_rcnn_r50_fpn_1x_ce.py"))
    again = torch.load(train(), map_location="cpu", weights_only=True)  # same resolved config: resumes
    assert final.read_bytes() != first
    assert again["meta"]["lineage"] == stage_lineage(checkout, "train_t1_ce_s0") != ckpt["meta"]["lineage"]
    assert all(torch.equal(again["state_dict"][k], ckpt["state_dict"][k]) for k in ckpt["state_dict"])
