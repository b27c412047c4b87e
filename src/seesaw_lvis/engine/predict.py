"""Run a trained row on the validation split and write LVIS results files (bbox, segm).

mmdet's LVISMetric with ``format_only=True`` converts the predictions into the standard
LVIS results JSON; the metrics are then computed from those files by
``seesaw_lvis.evaluation`` (so any results file, ours or not, is evaluated the same way).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import atomic_path

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")


def predict(params: Mapping[str, Any], row_id: str, checkpoint: Path, out_dir: Path,
            seed: int | None = None, cfg=None) -> dict[str, Path]:
    """Write ``out_dir/results.{bbox,segm}.json`` for ``row_id`` (resolved with ``seed``, or
    ``cfg``, its resolved config, left unchanged) with ``checkpoint``."""
    import copy

    from mmengine.runner import Runner

    from seesaw_lvis import compat
    from seesaw_lvis.configs import resolve

    compat.install()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolve.load(params, row_id, seed=seed) if cfg is None else copy.deepcopy(cfg)
    if cfg.get("tta_model"):  # a TTA row: wrap the model, test on the augmented views (mmdet's --tta)
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    # One pass over the val split: persistent workers would buy nothing, and torch then joins
    # them only at garbage collection, with a 5 s timeout per worker that they hit (10 s of
    # every evaluation job at mini, measured).
    cfg.test_dataloader.persistent_workers = False
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".predict.") as tmp:
        cfg.work_dir = tmp
        cfg.load_from = str(checkpoint)
        cfg.resume = False
        cfg.test_evaluator = dict(type="LVISMetric", ann_file=cfg.test_evaluator["ann_file"],
                                  metric=list(IOU_TYPES), format_only=True,
                                  outfile_prefix=f"{tmp}/results")
        runner = Runner.from_cfg(cfg)
        runner.test()
        outputs = {}
        for iou_type in IOU_TYPES:
            produced = Path(tmp) / f"results.{iou_type}.json"
            final = out_dir / f"results.{iou_type}.json"
            with atomic_path(final) as dst:
                shutil.copyfile(produced, dst)
            outputs[iou_type] = final
    log.info("row %s: predictions written to %s", row_id, out_dir)
    return outputs
