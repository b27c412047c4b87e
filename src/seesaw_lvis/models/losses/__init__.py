"""Losses registered in mmdet's ``MODELS``: ``DistSeesawLoss`` (Seesaw Loss with counts
summed over ranks) and ``EQLoss`` (Equalization Loss, CVPR 2020)."""
from .eql import LAMBDA_LVIS_V05, LAMBDA_LVIS_V1, EQLoss, load_class_freq
from .seesaw_loss import SeesawLoss, label_histogram, seesaw_log_factors

__all__ = ["SeesawLoss", "EQLoss", "load_class_freq", "LAMBDA_LVIS_V05", "LAMBDA_LVIS_V1",
           "label_histogram", "seesaw_log_factors"]
