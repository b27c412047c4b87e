"""Train one table row with mmengine's Runner: resumable, guarded against NaN, atomic outputs.

The work directory (``results/train/<row>/work``) holds mmengine's checkpoints and logs and
is NOT a declared output of the pipeline, so neither Snakemake's clean-up of a failed job nor
a preemption (SIGKILL) removes it: re-running the stage resumes from the latest checkpoint
(mmengine's ``resume=True`` with ``load_from=None`` finds it). Only when training finishes is
the final checkpoint copied atomically to ``results/train/<row>/final.pth``, the stage's
declared output, together with the resolved config. ``final.pth`` is that checkpoint with
the stage's lineage added to its ``meta`` (seesaw_lvis.workflow.lineage): a resumed run that
had nothing left to train still writes a new ``final.pth`` when any input of the stage changed.
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


def _non_finite_loss_hook():
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    class NonFiniteLossHook(Hook):
        """Stops training at the first non-finite loss, before the optimizer could have
        written NaN weights into a checkpoint. Runs right after the iteration's loss."""

        priority = "HIGHEST"

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if not outputs:
                return
            bad = {k: float(v) for k, v in outputs.items()
                   if "loss" in k and hasattr(v, "item") and not math.isfinite(float(v))}
            if bad:
                latest = runner.work_dir
                raise NonFiniteLossError(
                    f"non-finite loss at iteration {runner.iter + 1}: {bad}; training stopped, "
                    f"the last good checkpoint stays in {latest} (re-run resumes from it)")

    if "NonFiniteLossHook" not in HOOKS.module_dict:
        HOOKS.register_module(module=NonFiniteLossHook)
    return NonFiniteLossHook


def _rng_state_hook():
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    class RNGStateHook(Hook):
        """Saves torch's RNG state in each checkpoint and restores it on resume.

        mmengine replays the data stream on resume (so numpy's augmentation RNG ends where it
        was) but not the model's random sampling (torch RNG): without this, a resumed run
        draws different RoI samples than an uninterrupted one and ends with other weights."""

        priority = "VERY_LOW"

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            import torch

            checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

        def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
            import torch

            state = checkpoint.get("rng_state")
            if state and runner._resume:  # only when continuing the same run, not finetuning
                torch.set_rng_state(state["torch"])
                if "cuda" in state and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(state["cuda"])

    if "RNGStateHook" not in HOOKS.module_dict:
        HOOKS.register_module(module=RNGStateHook)
    return RNGStateHook


def build_config(params: Mapping[str, Any], row_id: str, work_dir: Path, load_from: str | None = None,
                 launcher: str = "none", cfg=None, seed: int | None = None):
    """The runnable config: the resolved row (``cfg``, resolved here with ``seed`` when None)
    + our hooks."""
    from seesaw_lvis.configs import resolve

    from seesaw_lvis.engine.mlflow_vis import vis_backends as mlflow_vis_backends

    cfg = resolve.load(params, row_id, seed=seed) if cfg is None else cfg
    # Training curves to MLflow (resilient: spooled locally while the server is unreachable).
    # The run is keyed by the hash of the resolved config: taken before the changes below.
    vis_backends = mlflow_vis_backends(params, row_id, work_dir, cfg)
    cfg.work_dir = str(work_dir)
    # Resume from the latest checkpoint in work_dir, if any (mmengine: resume with no
    # load_from). A finetune's first start only loads the parent's weights (mmengine would
    # otherwise also restore the parent's optimizer, schedule and iteration).
    cfg.resume = load_from is None
    cfg.load_from = load_from
    cfg.launcher = launcher
    # Evaluation is its own pipeline stage (engine/predict + seesaw_lvis.evaluation): no
    # validation inside the training job.
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.visualizer.vis_backends = vis_backends
    _non_finite_loss_hook()
    _rng_state_hook()
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="NonFiniteLossHook"), dict(type="RNGStateHook")]
    return cfg


def training_curves(work_dir: Path) -> list[dict[str, float]]:
    """Per-iteration scalars of every (resumed) run in ``work_dir``, by iteration, later wins.

    mmengine's LocalVisBackend writes ``<work_dir>/<timestamp>/vis_data/scalars.json`` (JSON
    lines) per run; a resumed job adds a new timestamp directory.
    """
    import json

    by_iter: dict[int, dict[str, float]] = {}
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "iter" in rec and ("loss" in rec or "lr" in rec):
                by_iter.setdefault(int(rec["iter"]), {}).update(rec)
    return [by_iter[i] for i in sorted(by_iter)]


def _has_checkpoint(work_dir: Path) -> bool:
    return (work_dir / "last_checkpoint").is_file()


CONFIG_HASH_FILE = "config_hash"


def _prepare_work_dir(work_dir: Path, config_hash: str) -> bool:
    """Resume only checkpoints of the same resolved config; True when resuming.

    A preempted job restarts with the same config and resumes. A row whose config changed
    must train afresh: its old work dir is moved aside (``work.stale-<hash>``), not deleted.
    """
    stamp = work_dir / CONFIG_HASH_FILE
    if work_dir.exists() and _has_checkpoint(work_dir):
        old = stamp.read_text().strip() if stamp.is_file() else "unknown"
        if old == config_hash:
            return True
        stale = work_dir.with_name(f"{work_dir.name}.stale-{old}")
        shutil.rmtree(stale, ignore_errors=True)
        work_dir.rename(stale)
        log.warning("the resolved config changed (%s -> %s): training from scratch; the old "
                    "checkpoints are kept in %s", old, config_hash, stale)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text(stamp, config_hash + "\n")
    return False


def _copy_with_lineage(src: Path, dst: Path, lineage: Mapping[str, str]) -> None:
    """``src`` (an mmengine checkpoint) written to ``dst`` with ``meta["lineage"]`` set."""
    import torch

    # weights_only, with the mmengine types seesaw_lvis.compat allow-lists (install() is done).
    checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    meta = checkpoint.get("meta")
    checkpoint["meta"] = {**(meta if isinstance(meta, dict) else {}), "lineage": dict(lineage)}
    # Through a file object, not the path: torch names the zip's top folder after a path's
    # file name (here a random temporary one), but always "archive" for a file object, so the
    # same checkpoint and lineage give the same bytes and DVC sees an unchanged output.
    with open(dst, "wb") as f:
        torch.save(checkpoint, f)


def train(params: Mapping[str, Any], row_id: str, out_dir: Path, load_from: str | None = None,
          launcher: str = "none", seed: int = 0) -> Path:
    """Train ``row_id`` with replicate ``seed``; returns the path of ``out_dir/final.pth``."""
    from mmengine.runner import Runner

    from seesaw_lvis import compat

    compat.install()
    from seesaw_lvis.configs import resolve
    from seesaw_lvis.workflow.lineage import stage_lineage

    out_dir = Path(out_dir)
    work_dir = out_dir / "work"
    lineage = stage_lineage(params, f"train_{row_id}_s{seed}")  # of what this run reads: taken before it runs
    resolved = resolve.load(params, row_id, seed=seed)
    resuming = _prepare_work_dir(work_dir, resolve.config_hash(resolved))
    cfg = build_config(params, row_id, work_dir, None if resuming else load_from, launcher, cfg=resolved)
    if resuming:
        log.info("row %s: resuming from %s", row_id, (work_dir / "last_checkpoint").read_text().strip())
    runner = Runner.from_cfg(cfg)
    runner.train()
    if runner.rank != 0:
        return out_dir / "final.pth"
    latest = Path((work_dir / "last_checkpoint").read_text().strip())
    final = out_dir / "final.pth"
    write_text(out_dir / "config.py", cfg.pretty_text)
    curves = [{k: v for k, v in rec.items() if k == "iter" or k == "lr" or k.startswith("loss")}
              for rec in training_curves(work_dir)]
    write_json(out_dir / "curves.json", curves)
    with atomic_path(final) as tmp:
        if lineage is None:  # not a stage of the pipeline (standalone use): the checkpoint as is
            shutil.copyfile(latest, tmp)
        else:
            _copy_with_lineage(latest, tmp, lineage)
    log.info("row %s seed %d: trained %d iterations, final checkpoint %s", row_id, seed, runner.iter, final)
    return final
