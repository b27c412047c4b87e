"""Evaluate one (row, seed) run: predict on the val split, LVIS metrics, the bootstrap's matches, MLflow.

What the ``evaluate`` stage does (``python -m seesaw_lvis evaluate --row ...``), beside
``engine/train.py``: :func:`seesaw_lvis.engine.predict.predict` writes the LVIS results
files, :mod:`seesaw_lvis.evaluation.lvis_eval` scores them and writes the per-detection match
tables the report's bootstrap resamples, then ``metrics.json`` (everything, with provenance and
the stage's lineage), ``summary.json`` (the headline numbers: ``dvc metrics show``) and the
row's MLflow run get the numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def evaluate_row(params: Mapping[str, Any], row_id: str, seed: int, checkpoint: Path, out_dir: Path,
                 log_file: Path | None = None) -> dict[str, Any]:
    """Returns the metrics written to ``out_dir/metrics.json``."""
    from seesaw_lvis import params as P
    from seesaw_lvis.data.download import file_digest
    from seesaw_lvis.engine import tracking
    from seesaw_lvis.engine.predict import predict
    from seesaw_lvis.evaluation import lvis_eval
    from seesaw_lvis.io import write_json
    from seesaw_lvis.workflow.lineage import stage_lineage

    out_dir = Path(out_dir)
    lineage = stage_lineage(params, f"evaluate_{row_id}_s{seed}")  # of what this run reads: before it runs
    files = predict(params, row_id, Path(checkpoint), out_dir, seed=seed)
    gt = P.dataset_dir(params) / "annotations" / "lvis_v1_val.json"
    metrics: dict[str, Any] = {}
    for iou_type, results in files.items():
        m, matches = lvis_eval.evaluate_with_matches(gt, results, iou_types=(iou_type,))
        metrics.update(m)
        matches[iou_type].save(out_dir / f"matches.{iou_type}.npz")  # the report's bootstrap
    # The checkpoint's hash: which weights these numbers belong to (provenance), and a
    # retrained row always changes its metrics file, so DVC re-runs what reads it.
    metrics["meta"] = {"row": row_id, "seed": seed, "checkpoint": str(checkpoint),
                       "checkpoint_sha256": file_digest(Path(checkpoint)), "gt": str(gt),
                       "scale": params["scale"], "dataset": params["dataset"]}
    if lineage is not None:  # the report reads this file: see seesaw_lvis.workflow.lineage
        metrics["meta"]["lineage"] = lineage
    out = write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "summary.json", lvis_eval.headline(metrics))  # `dvc metrics show`
    artifacts = [out, Path(checkpoint).parent / "config.py", *([Path(log_file)] if log_file else [])]
    tracking.log_evaluation(params, row_id, metrics, [a for a in artifacts if a.is_file()], seed=seed)
    return metrics
