"""Pipeline overheads, measured side by side: `python -m seesaw_lvis bench pipeline`.

* no-op wall time of `snakemake -n all` and `dvc status` in a repository whose pipeline has
  completed (nothing to do: what a user pays to ask "is everything up to date?");
* training iterations/s of one row through our entry point (seesaw_lvis.engine.train: resolved
  config, NaN guard, RNG-state hook, atomic outputs) vs mmdet's own Runner on the same resolved
  config, in one process, and their ratio (our overhead).
"""
from __future__ import annotations

import copy
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import write_json

log = logging.getLogger(__name__)


def _time_command(cmd: list[str], cwd: Path, repeats: int) -> dict[str, Any]:
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{out[-2000:]}")
    return {"median_s": statistics.median(times), "runs_s": times, "tail": out.strip().splitlines()[-1:]}


def noop_timings(repo: Path, repeats: int = 3) -> dict[str, Any]:
    dry_run = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "all"]
    probe = subprocess.run(dry_run, cwd=repo, capture_output=True, text=True)
    if "Nothing to be done" not in probe.stdout + probe.stderr:
        raise RuntimeError(f"{repo}: the pipeline has work left; run `snakemake --cores all all` first")
    return {"snakemake_dry_run": _time_command(dry_run, repo, repeats),
            "dvc_status": _time_command([sys.executable, "-m", "dvc", "status"], repo, repeats)}


def _median_iter_time(runner) -> float:
    times = runner.message_hub.get_scalar("train/time").data[0]
    steady = list(times)[2:] or list(times)  # the first iterations include warm-up
    return float(statistics.median(steady))


def training_overhead(params: Mapping[str, Any], row_id: str, iters: int, pairs: int = 3) -> dict[str, Any]:
    """Median seconds/iteration: our train entry vs a bare mmengine Runner, same config.

    ``pairs`` interleaved (Runner, ours) runs: the ratio is of the means over all runs, and
    each pair's own ratio is reported too, so run-to-run noise is visible beside the result.
    """
    from mmengine.runner import Runner

    from seesaw_lvis import compat
    from seesaw_lvis.configs import resolve
    from seesaw_lvis.engine import train as engine

    compat.install()
    params = copy.deepcopy(params)
    overlay = params["scales"][params["scale"]]
    if overlay is None:
        raise ValueError("bench pipeline measures training at the ci or mini scale, not full")
    overlay.update(max_iters=iters, iters_per_epoch=iters, schedule_exponent=1.0)

    def ours(work: Path):
        holder: dict = {}
        original = Runner.from_cfg

        def capture(cfg, _orig=original, _h=holder):
            _h["runner"] = _orig(cfg)
            return _h["runner"]

        Runner.from_cfg = staticmethod(capture)
        try:
            engine.train(params, row_id, work)
        finally:
            Runner.from_cfg = original
        return holder["runner"]

    def mmdet_runner(work: Path):
        cfg = resolve.load(params, row_id)
        cfg.work_dir = str(work)
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        runner = Runner.from_cfg(cfg)
        runner.train()
        return runner

    results: dict[str, list[float]] = {"mmdet_runner": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(pairs):  # interleaved: slow drifts of the machine hit both alike
            for name, run_one in (("mmdet_runner", mmdet_runner), ("ours", ours)):
                results[name].append(_median_iter_time(run_one(Path(tmp) / f"{name}_{pair}")))
    mean_ours, mean_theirs = statistics.mean(results["ours"]), statistics.mean(results["mmdet_runner"])
    return {"row": row_id, "scale": params["scale"], "iterations": iters, "pairs": pairs,
            "ours_s_per_iter": mean_ours, "mmdet_runner_s_per_iter": mean_theirs,
            "ours_iters_per_s": 1 / mean_ours, "mmdet_runner_iters_per_s": 1 / mean_theirs,
            "overhead_ratio": mean_ours / mean_theirs,
            "pair_ratios": [o / t for o, t in zip(results["ours"], results["mmdet_runner"])],
            "samples": results}


def run(params: Mapping[str, Any], out: Path, repo: Path = Path("."), row_id: str = "t1_ce",
        iters: int = 30, pairs: int = 3) -> dict[str, Any]:
    import torch

    result = {
        "noop": noop_timings(repo),
        "training": training_overhead(params, row_id, iters, pairs),
        "torch_threads": torch.get_num_threads(),
        "targets": {"noop_s_max": 5.0, "training_overhead_max": 1.02},
    }
    write_json(out, result)
    return result
