"""``FastLVISMetric``: mmdet's ``LVISMetric`` with our evaluator in place of lvis-api's.

Use it in an mmdet config as::

    custom_imports = dict(imports=['seesaw_lvis.models', 'seesaw_lvis.evaluation.metric'])
    val_evaluator = dict(type='FastLVISMetric', ann_file='.../lvis_v1_val.json',
                         metric=['bbox', 'segm'], outfile_prefix='work_dirs/x/results')

Everything but the evaluation call is mmdet 3.3's ``LVISMetric``: ``process`` (predictions
to numpy, masks to RLE), ``results2json`` (``{outfile_prefix}.bbox.json`` /
``.segm.json``, kept when ``outfile_prefix`` is given, the raw results for submission or
re-evaluation), ``format_only``, the ``classwise`` table, and the output keys:
``lvis/bbox_AP``, ``lvis/bbox_AP50``, ``lvis/bbox_AP75``, ``lvis/bbox_APs``,
``lvis/bbox_APm``, ``lvis/bbox_APl``, ``lvis/bbox_APr``, ``lvis/bbox_APc``,
``lvis/bbox_APf`` (and ``segm_*``), rounded to 3 decimals, -1.0 where lvis gives -1; any of
lvis's ``AR@300``, ``ARs@300``, ``ARm@300``, ``ARl@300`` when named in ``metric_items``.
The values are those of lvis-api (``seesaw_lvis.evaluation.lvis_eval``), only faster.
``proposal`` / ``proposal_fast`` are left to ``LVISMetric`` itself.
"""
from __future__ import annotations

import itertools
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict

from mmengine.logging import MMLogger

from mmdet.evaluation.metrics.lvis_metric import LVISMetric
from mmdet.registry import METRICS

from seesaw_lvis import compat
from seesaw_lvis.evaluation.lvis_eval import AR_KEYS, METRIC_KEYS, evaluate
from seesaw_lvis.io import read_json

__all__ = ["FastLVISMetric"]

compat.install()  # LVISMetric's own lvis-api paths (proposal metrics) need np.float

_existing = METRICS.module_dict.get("FastLVISMetric")
if _existing is not None and _existing.__module__ != __name__:
    raise RuntimeError("mmdet.registry.METRICS already holds a 'FastLVISMetric' from "
                       f"{_existing.__module__}: refusing to shadow it")


@METRICS.register_module(force=_existing is not None)  # force only when this module is reloaded
class FastLVISMetric(LVISMetric):
    """mmdet's ``LVISMetric`` (same arguments, same keys) evaluated by ``seesaw_lvis``."""

    default_prefix = "lvis"

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        eval_results: "OrderedDict[str, float]" = OrderedDict()
        proposal = [m for m in self.metrics if m in ("proposal", "proposal_fast")]
        ours = [m for m in self.metrics if m not in proposal]
        if proposal:  # not the task of this metric: lvis-api as mmdet does it
            saved = self.metrics
            self.metrics = proposal
            try:
                eval_results.update(super().compute_metrics(results))
            finally:
                self.metrics = saved
            if not ours:
                return eval_results

        gts, preds = zip(*results)
        tmp_dir = None
        if self.outfile_prefix is None:
            tmp_dir = tempfile.TemporaryDirectory()
            outfile_prefix = osp.join(tmp_dir.name, "results")
        else:
            outfile_prefix = self.outfile_prefix
        try:
            if self._lvis_api is None:
                from lvis import LVIS

                logger.info("Converting ground truth to coco format...")
                coco_json_path = self.gt_to_coco_json(gt_dicts=gts, outfile_prefix=outfile_prefix)
                self._lvis_api = LVIS(coco_json_path)
            if self.cat_ids is None:
                self.cat_ids = self._lvis_api.get_cat_ids()
            if self.img_ids is None:
                self.img_ids = self._lvis_api.get_img_ids()

            result_files = self.results2json(preds, outfile_prefix)
            if self.format_only:
                logger.info(f"results are saved in {osp.dirname(outfile_prefix)}")
                return eval_results

            for metric in ours:
                logger.info(f"Evaluating {metric} (seesaw_lvis evaluator)...")
                dets = read_json(result_files[metric])
                if not dets:
                    logger.info("The testing results of the whole dataset is empty.")
                    break
                res = evaluate(self._lvis_api.dataset, dets, iou_types=(metric,))[metric]
                if self.classwise:
                    self._log_classwise(res["per_class"], eval_results, logger)
                metric_items = self.metric_items
                if metric_items is None:
                    metric_items = list(METRIC_KEYS)
                for k in (*METRIC_KEYS, *AR_KEYS):
                    if k in metric_items:
                        v = -1.0 if res[k] is None else res[k]
                        eval_results[f"{metric}_{k}"] = float("{:.3f}".format(float(v)))
                logger.info(f"{metric}: " + " ".join(
                    f"{k}={-1.0 if res[k] is None else res[k]:.3f}" for k in (*METRIC_KEYS, *AR_KEYS)))
        finally:
            if tmp_dir is not None:
                tmp_dir.cleanup()
        return eval_results

    def _log_classwise(self, per_class: dict, eval_results: dict, logger: MMLogger) -> None:
        from terminaltables import AsciiTable

        rows = []
        for cat_id in self.cat_ids:
            nm = self._lvis_api.load_cats([cat_id])[0]
            ap = per_class.get(str(cat_id))
            ap = float("nan") if ap is None else ap
            rows.append((f"{nm['name']}", f"{float(ap):0.3f}"))
            eval_results[f"{nm['name']}_precision"] = round(ap, 3)
        num_columns = min(6, len(rows) * 2)
        flat = list(itertools.chain(*rows))
        headers = ["category", "AP"] * (num_columns // 2)
        table = [headers] + list(itertools.zip_longest(*[flat[i::num_columns] for i in range(num_columns)]))
        logger.info("\n" + AsciiTable(table).table)

