"""Necks registered in mmdet's ``MODELS``: ``FPGCarafe`` (enhanced FPG, paper sec. 2.2)."""
from .fpg_carafe import CarafeDownConv, FPGCarafe, example_neck_cfg

__all__ = ["FPGCarafe", "CarafeDownConv", "example_neck_cfg"]
