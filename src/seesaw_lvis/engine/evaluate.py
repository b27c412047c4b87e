"""Evaluate one (row, seed) run: predict on the val split, LVIS metrics, the bootstrap's matches, MLflow.

What the ``evaluate`` stage does (``python -m seesaw_lvis evaluate --row ...``), beside
``engine/train.py``: :func:`seesaw_lvis.engine.predict.predict` writes the LVIS results
files, :mod:`seesaw_lvis.evaluation.lvis_eval` scores them and writes the per-detection match
tables the report's bootstrap resamples, then ``metrics.json`` (everything, with provenance and
the stage's lineage), ``summary.json`` (the headline numbers: ``dvc metrics show``) and the
row's MLflow run get the numbers.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)


def evaluate_row(params: Mapping[str, Any], row_id: str, seed: int, checkpoint: Path, out_dir: Path,
                 log_file: Path | None = None) -> dict[str, Any]:
    """Returns the metrics written to ``out_dir/metrics.json``."""
    from seesaw_lvis import params as P
    from seesaw_lvis.configs import resolve
    from seesaw_lvis.data.download import file_digest
    from seesaw_lvis.engine.predict import predict
    from seesaw_lvis.evaluation import lvis_eval
    from seesaw_lvis.io import checkpoint_iterations, write_json
    from seesaw_lvis.workflow.lineage import stage_lineage

    out_dir = Path(out_dir)
    lineage = stage_lineage(params, f"evaluate_{row_id}_s{seed}")  # of what this run reads: before it runs
    cfg = resolve.load(params, row_id, seed=seed)  # once: parsing the config chain takes seconds
    files = predict(params, row_id, Path(checkpoint), out_dir, seed=seed, cfg=cfg)
    gt = P.dataset_dir(params) / "annotations" / "lvis_v1_val.json"
    metrics: dict[str, Any] = {}
    for iou_type, results in files.items():
        m, matches = lvis_eval.evaluate_with_matches(gt, results, iou_types=(iou_type,))
        metrics.update(m)
        matches[iou_type].save(out_dir / f"matches.{iou_type}.npz")  # the report's bootstrap
    # The checkpoint's hash: which weights these numbers belong to (provenance), and a
    # retrained row always changes its metrics file, so DVC re-runs what reads it.
    # The iterations behind the weights, so the tables say how long each row trained at this
    # scale (a row's `schedule` is the paper's name for it: 45e means 60 iterations at mini).
    metrics["meta"] = {"row": row_id, "seed": seed, "checkpoint": str(checkpoint),
                       "checkpoint_sha256": file_digest(Path(checkpoint)), "gt": str(gt),
                       "trained_iterations": checkpoint_iterations(checkpoint),
                       "scale": params["scale"], "dataset": params["dataset"]}
    if lineage is not None:  # the report reads this file: see seesaw_lvis.workflow.lineage
        metrics["meta"]["lineage"] = lineage
    out = write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "summary.json", lvis_eval.headline(metrics))  # `dvc metrics show`
    artifacts = [out, Path(checkpoint).parent / "config.py", *([Path(log_file)] if log_file else [])]
    log_evaluation(params, row_id, metrics, [a for a in artifacts if a.is_file()], seed=seed, cfg=cfg)
    return metrics


def log_evaluation(params: Mapping[str, Any], row_id: str, metrics: Mapping[str, Any],
                   artifacts: Iterable[str | os.PathLike] = (), work_dir: str | os.PathLike | None = None,
                   seed: int | None = None, cfg=None) -> bool:
    """A row's evaluation into its run: the metrics of :func:`evaluation_metrics` at step 0,
    ``artifacts`` under ``evaluation/`` and the resolved config's params the run lacks (tta rows
    never train). ``cfg``: the row's resolved config (default: resolved here). Spools to
    ``work_dir`` (default the run's work dir) while the store is down. True when everything
    reached the store."""
    from seesaw_lvis.configs import resolve
    from seesaw_lvis.engine.runs import evaluation_metrics, flatten_params, row_work_dir, run_identity, settings
    from seesaw_lvis.engine.tracking import RunLogger

    if cfg is None:
        cfg = resolve.load(params, row_id, seed=seed)
    spool_dir = Path(work_dir) if work_dir is not None else row_work_dir(params, row_id, cfg.randomness.seed)
    logger = RunLogger(settings(params), run_identity(params, row_id, cfg), spool_dir, label=f"row {row_id}")
    logger.start()
    ok = logger.log_params(flatten_params(cfg.to_dict()), conflicts="ignore")
    ok &= logger.log_metrics(evaluation_metrics(metrics), step=0)
    artifacts = [Path(a) for a in artifacts]
    for a in artifacts:
        if not a.is_file():
            log.warning("MLflow: evaluation artifact %s not found; not logged", a)
    ok &= logger.log_artifacts([(a, "evaluation") for a in artifacts if a.is_file()])
    return bool(logger.close("FINISHED") and ok)
