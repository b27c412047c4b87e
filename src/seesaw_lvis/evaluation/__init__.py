"""LVIS v1 evaluation: lvis-api 0.5.3's numbers, faster (``lvis_eval``), and the mmdet metric
``FastLVISMetric`` (``metric``; imported on first use here, since it pulls in mmdet: mmdet
configs import ``seesaw_lvis.evaluation.metric`` through ``custom_imports``)."""
from __future__ import annotations

from seesaw_lvis.evaluation.lvis_eval import AR_KEYS, METRIC_KEYS, evaluate, run

__all__ = ["evaluate", "run", "METRIC_KEYS", "AR_KEYS", "FastLVISMetric"]


def __getattr__(name: str):
    if name == "FastLVISMetric":
        from seesaw_lvis.evaluation.metric import FastLVISMetric

        return FastLVISMetric
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
