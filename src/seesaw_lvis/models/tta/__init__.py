"""Test-time augmentation registered in mmdet's ``MODELS``: ``InstanceSegTTAModel``."""
from .instance_tta import TTA_SCALES, InstanceSegTTAModel, example_tta_cfg

__all__ = ["InstanceSegTTAModel", "example_tta_cfg", "TTA_SCALES"]
