"""Layers registered in mmdet's ``MODELS``: ``TauNormedLinear`` (eq. 3)."""
from .normed_linear import NormedLinearTau

__all__ = ["NormedLinearTau"]
