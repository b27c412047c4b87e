"""LVIS v1 evaluation: lvis-api 0.5.3's numbers, faster (``lvis_eval``), and the bootstrap's
weighted re-accumulation of a run's matches (``bootstrap``)."""
from __future__ import annotations

from seesaw_lvis.evaluation.lvis_eval import AR_KEYS, METRIC_KEYS, evaluate, run

__all__ = ["evaluate", "run", "METRIC_KEYS", "AR_KEYS"]
