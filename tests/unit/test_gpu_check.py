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
