"""scripts/gpu_check.py: the check a lent GPU runs. Its CPU dry run is the same code path
(the full-scale step of a row, the JSON report, the exit code), with the CUDA-only parts
recorded as skipped."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gpu_check.py"), "--dry-run", "--rows", "t1_seesaw",
                           "--params", str(REPO / "params/pipeline.yaml"), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["passed"] is True and report["device"] == "cpu (dry run)"
    assert report["mmcv_cuda_ops"] == {"skipped": "dry run: no CUDA"}
    row = report["rows"]["t1_seesaw"]
    assert row["losses_finite"] and row["grads_finite"] and row["images_per_s"] > 0
    assert row["params"] > 40e6 and row["seconds_per_iter"] > 0


def test_gpu_check_without_cuda_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the no-CUDA answer cannot be seen here")
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gpu_check.py"), "--out", str(tmp_path / "x.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "CUDA not available" in proc.stdout
    assert not (tmp_path / "x.json").exists()


def _copy_script(tmp_path):
    """scripts/gpu_check.sh in a tree of its own: it finds .whl/ beside its scripts/ folder."""
    import shutil

    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts/gpu_check.sh", tmp_path / "scripts/gpu_check.sh")
    return tmp_path / "scripts/gpu_check.sh"


def test_gpu_check_sh_without_the_carried_files_names_them(tmp_path):
    script = _copy_script(tmp_path)
    proc = subprocess.run(["bash", str(script), str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{tmp_path}/.whl/mmcv-2.1.0.tar.gz missing" in proc.stderr and "--fetch" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_check_sh_builds_nothing_without_cuda(tmp_path):
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the no-CUDA answer cannot be seen here")
    script = _copy_script(tmp_path)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl/mmcv-2.1.0.tar.gz").write_bytes(b"")
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}  # python3: this torch
    proc = subprocess.run(["bash", str(script), str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 1 and "no CUDA device visible to torch" in proc.stderr
    assert not (tmp_path / "out").exists()
