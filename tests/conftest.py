"""Shared fixtures: the repository root, small and default synthetic datasets, a pipeline copy."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# What a pipeline run needs from the repository (the package itself is installed editable).
PIPELINE_FILES = ("Snakefile", "dvc.yaml", "params", "workflow", "src", ".dvcignore")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def default_params() -> dict:
    from seesaw_lvis.params import load

    return load(REPO / "params" / "pipeline.yaml")


@pytest.fixture(scope="session")
def small_spec():
    from seesaw_lvis.data.synthetic import SyntheticSpec

    return SyntheticSpec(num_classes=8, train_images=40, val_images=12, image_size=64,
                         max_images_per_class=30, min_val_images_per_class=2, seed=3)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, small_spec) -> Path:
    from seesaw_lvis.data.synthetic import generate

    return generate(small_spec, tmp_path_factory.mktemp("small") / "synthetic")


@pytest.fixture(scope="session")
def default_dataset(tmp_path_factory, default_params) -> Path:
    """The dataset exactly as the default params make it (~6 s)."""
    from seesaw_lvis.data.synthetic import generate, spec_from_params

    return generate(spec_from_params(default_params), tmp_path_factory.mktemp("default") / "synthetic")


@pytest.fixture(scope="session")
def ci_params(default_params, tmp_path_factory):
    """Params at ci scale over a small synthetic dataset (with its stats) in a tmp dir."""
    from seesaw_lvis.data import stats
    from seesaw_lvis.data.synthetic import generate, spec_from_params

    root = tmp_path_factory.mktemp("ci")
    params = copy.deepcopy(default_params)
    params.update(scale="ci", dataset="synthetic")
    params["paths"] = {"data": str(root / "data"), "results": str(root / "results"),
                       "reports": str(root / "reports"), "logs": str(root / "logs")}
    params["synthetic"].update(num_classes=8, train_images=24, val_images=6, image_size=64,
                               max_images_per_class=20, min_val_images_per_class=1)
    params["tracking"] = {**params["tracking"], "uri": f"sqlite:///{root}/mlflow.db",   # never the user's store
                          "artifact_location": str(root / "mlartifacts")}
    ds = generate(spec_from_params(params), root / "data" / "synthetic")
    s = stats.compute(json.loads((ds / "annotations/lvis_v1_train.json").read_text()))
    stats.write(s, root / "results/stats/class_freq.csv", root / "results/stats/class_freq.json")
    from seesaw_lvis.engine import pretrain
    from seesaw_lvis.params import pretrain_path

    for family in ("resnet", "resnest"):  # the weights every row's init_cfg names (2 iterations at ci)
        pretrain.run(params, family, pretrain_path(params, family).parent)
    return params


def run(cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, showing its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny_trunk(channels: int) -> dict:
    """data_preprocessor, backbone (ResNet-18, 8 base channels) and FPN of the tiny detectors
    the unit tests build, with ``channels`` FPN outputs."""
    return dict(
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                               pad_mask=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=4,
                      out_indices=(0, 1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                      style='pytorch', init_cfg=None),
        neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=channels, num_outs=5))


def copy_pipeline(dest: Path) -> Path:
    """The pipeline files copied to ``dest`` as a fresh git + DVC repository."""
    dest.mkdir(parents=True)
    for name in PIPELINE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    return dest


@pytest.fixture
def pipeline_copy(tmp_path) -> Path:
    """A fresh copy of the pipeline files as a git + DVC repository, to run both tools in."""
    return copy_pipeline(tmp_path / "repo")


def mlflow_server(cwd: Path, env: dict[str, str]):
    """scripts/mlflow-server.sh with ``env`` (its MLFLOW_* settings), run in ``cwd``: call the
    result with "start", "stop" or "status"; it returns the script's output, failing the test
    when the script fails."""
    def script(verb: str) -> str:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "mlflow-server.sh"), verb], env=env,
                              capture_output=True, text=True, timeout=300, cwd=cwd)
        assert proc.returncode == 0, f"mlflow-server.sh {verb}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    return script


def set_params(repo: Path, **changes) -> None:
    """Set top-level keys of the copy's pipeline.yaml; a key set to None is removed."""
    path = repo / "params" / "pipeline.yaml"
    params = yaml.safe_load(path.read_text())
    params.update(changes)
    params = {k: v for k, v in params.items() if v is not None}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# The checkout's own outputs and stores: a test works in its own tmp dir and tracking store,
# never here (the user's experiment, their results and reports).
USER_OUTPUTS = ("mlflow.db", "mlruns", "mlartifacts", "results", "data", "reports", "logs")


def outputs_snapshot(root: Path) -> dict:
    """``{relative path: (size, mtime_ns)}`` of every file under the user's outputs."""
    found = {}
    for name in USER_OUTPUTS:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for f in files:
            st = f.stat()
            found[str(f.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="session", autouse=True)
def user_outputs_untouched():
    """Fails the session (an error at the last test's teardown) if any test created, changed or
    removed a file of the checkout's mlflow.db, mlruns/, mlartifacts/, results/, data/,
    reports/ or logs/."""
    before = outputs_snapshot(REPO)
    yield
    after = outputs_snapshot(REPO)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the tests wrote into the checkout's own outputs ({len(changed)} files): {changed[:20]}"


@pytest.fixture(autouse=True)
def mmdet_default_scope():
    """Each test builds modules in mmdet's registry scope, whatever an earlier test's Runner
    left as mmengine's current default scope (a process-wide global)."""
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet"):
        yield
