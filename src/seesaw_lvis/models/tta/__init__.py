"""Test-time augmentation registered in mmdet's ``MODELS``: ``InstanceSegTTAModel``."""
from .instance_tta import TTA_SCALES, InstanceSegTTAModel

__all__ = ["InstanceSegTTAModel", "TTA_SCALES"]
