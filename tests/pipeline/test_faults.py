"""Faults a cluster throws at training: preemption (SIGKILL) and a non-finite loss."""
from __future__ import annotations

import copy
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

ROW = "t1_ce"


@pytest.fixture
def fault_params(ci_params, tmp_path):
    """ci params with a 6-iteration schedule, a checkpoint every 2 iterations, written to disk."""
    params = copy.deepcopy(ci_params)
    params["scales"]["ci"].update(max_iters=6, iters_per_epoch=2, num_workers=0)
    pdir = tmp_path / "params"
    pdir.mkdir()
    base = {k: v for k, v in params.items() if k not in ("rows", "scales")}
    (pdir / "pipeline.yaml").write_text(yaml.safe_dump(base))
    (pdir / "rows.yaml").write_text(yaml.safe_dump({"rows": params["rows"]}))
    (pdir / "scales.yaml").write_text(yaml.safe_dump({"scales": params["scales"]}))
    return params, pdir / "pipeline.yaml"


def train_cmd(params_file: Path, out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "seesaw_lvis", "train", "--params", str(params_file), "--row", ROW,
            "--out-dir", str(out_dir)]


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    from seesaw_lvis import compat

    compat.install()
    return torch.load(out_dir / "final.pth", map_location="cpu")["state_dict"]


def test_sigkill_mid_run_resumes_to_the_same_weights(fault_params, tmp_path):
    params, params_file = fault_params
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # deterministic CPU kernels, same in both runs
    subprocess.run(train_cmd(params_file, straight), check=True, capture_output=True, env=env, timeout=600)

    proc = subprocess.Popen(train_cmd(params_file, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not (killed / "work" / "iter_4.pth").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # what a preemption does
    proc.wait()
    assert not (killed / "final.pth").exists(), "a killed job must not leave its final output"

    resumed = subprocess.run(train_cmd(params_file, killed), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], atol=1e-5), key
        else:
            assert torch.equal(a[key], b[key]), key


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(fault_params, tmp_path):
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from seesaw_lvis.engine import train as engine

    params, _ = fault_params

    @HOOKS.register_module(force=True)
    class PoisonWeightsAfterIter2(Hook):
        priority = "LOWEST"  # after the checkpoint of iteration 2 is written

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == 2:
                with torch.no_grad():
                    for p in runner.model.parameters():
                        p.fill_(float("nan"))

    original = engine.build_config

    def build_config_with_poison(*args, **kwargs):
        cfg = original(*args, **kwargs)
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type="PoisonWeightsAfterIter2")]
        return cfg

    engine.build_config = build_config_with_poison
    try:
        with pytest.raises(engine.NonFiniteLossError, match="non-finite loss at iteration 3"):
            engine.train(params, ROW, tmp_path / "out")
    finally:
        engine.build_config = original
    work = tmp_path / "out" / "work"
    assert (work / "iter_2.pth").is_file() and not (work / "iter_4.pth").exists()
    assert not (tmp_path / "out" / "final.pth").exists()
    state = torch.load(work / "iter_2.pth", map_location="cpu")["state_dict"]
    assert all(math.isfinite(float(v.float().abs().sum())) for v in state.values() if v.is_floating_point())
