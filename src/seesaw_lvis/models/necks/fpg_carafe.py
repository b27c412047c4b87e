"""``FPGCarafe``: Feature Pyramid Grids with CARAFE++ downsampling and DCNv2 after upsampling.

The paper (sec. 2.2, "Better Neck") uses "an enhanced version of FPG [that] uses deformable
convolution v2 (DCNv2) after feature upsampling, and a downsampler version of CARAFE for
feature downsampling". mmdet 3.3's ``FPG`` (``mmdet/models/necks/fpg.py``) picks its
transitions from a fixed class dict (``conv``, ``interpolation_conv``, ``last_conv``) with no
registry hook, so we subclass it and extend that dict; nothing else of FPG changes.

* DCNv2 after upsampling needs no new code: ``across_down_trans=dict(type='interpolation_conv',
  conv_cfg=dict(type='DCNv2', deform_groups=1), ...)`` -- FPG's ``UpInterpolationConv`` is
  "nearest upsample x2, then ConvModule", and ``conv_cfg`` reaches the ConvModule, whose conv
  becomes mmcv's ``ModulatedDeformConv2dPack`` (it has a CPU kernel in mmcv 2.1.0).
* ``carafe_down`` (:class:`CarafeDownConv`, new) replaces the stride-2 3x3 conv of the
  bottom-up ``same_up_trans``. What it computes, following the downsampling operator of
  CARAFE++ (Wang et al., "CARAFE++: Unified Content-Aware ReAssembly of FEatures", TPAMI 2021):

  1. kernel prediction: a 1x1 *channel compressor* (C -> ``compressed_channels``), then a
     ``encoder_kernel`` x ``encoder_kernel`` *content encoder* with **stride 2** that outputs
     ``down_kernel**2 * down_group`` channels at the output resolution ``ceil(H/2) x ceil(W/2)``,
     softmax-normalised over the ``down_kernel**2`` entries (per group);
  2. reassembly: output location ``l' = (y', x')`` is the kernel-weighted sum of the
     ``down_kernel x down_kernel`` input neighbourhood centred at ``2 * l'`` (zero padding),
     i.e. :func:`seesaw_lvis.models.ops.carafe.carafe_down_cpu` -- plain PyTorch, any device;
  3. a ``kernel_size`` x ``kernel_size`` stride-1 ``ConvModule`` (C_in -> C_out, with the
     transition's ``norm_cfg`` / ``order`` / ``act_cfg``), so the transition keeps the channel
     change and the refinement the strided conv did, at the same FLOPs (a stride-1 conv on
     the half-resolution map costs what the stride-2 conv cost).

  Initialisation follows mmcv's CARAFEPack: xavier-uniform compressor, content encoder
  ``normal(std=0.001)`` -- so at start the kernels are almost uniform and the downsampler is
  close to a ``down_kernel`` x ``down_kernel`` average pool at stride 2. The defaults
  (``down_kernel=5, encoder_kernel=3, compressed_channels=64``) mirror CARAFEPack's defaults;
  the MMDet team's exact values for the challenge entry are not published.

:func:`example_neck_cfg` gives the neck dict: mmdet's
``configs/fpg/mask-rcnn_r50_fpg_crop640-50e_coco.py`` settings (256 channels, 5 outputs,
9 bottom-up stacks, the same skip pattern, act-conv-norm transitions) with the two
enhancements.
"""
from __future__ import annotations

import copy

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import normal_init, xavier_init
from mmdet.models.necks.fpg import FPG, Transition
from mmdet.registry import MODELS
from torch import Tensor

from ..ops.carafe import carafe_down_cpu

__all__ = ["FPGCarafe", "CarafeDownConv", "example_neck_cfg"]


class CarafeDownConv(Transition):
    """Content-aware (CARAFE++) x2 downsampling followed by a stride-1 ConvModule."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 scale_factor: int = 2,
                 down_kernel: int = 5,
                 down_group: int = 1,
                 encoder_kernel: int = 3,
                 encoder_dilation: int = 1,
                 compressed_channels: int = 64,
                 kernel_size: int = 3,
                 init_cfg=None,
                 **kwargs):
        super().__init__(in_channels, out_channels, init_cfg)
        if in_channels % down_group != 0:
            raise ValueError("in_channels must be divisible by down_group")
        self.scale_factor = int(scale_factor)
        self.down_kernel = int(down_kernel)
        self.down_group = int(down_group)
        self.channel_compressor = nn.Conv2d(in_channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            self.down_kernel ** 2 * self.down_group,
            encoder_kernel,
            stride=self.scale_factor,
            padding=(encoder_kernel - 1) * encoder_dilation // 2,
            dilation=encoder_dilation)
        self.conv = ConvModule(
            in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, **kwargs)
        self._init_predictor()

    def _init_predictor(self) -> None:
        xavier_init(self.channel_compressor, distribution='uniform')
        normal_init(self.content_encoder, std=0.001)

    def init_weights(self) -> None:
        super().init_weights()
        self._init_predictor()  # after any parent init_cfg (FPG's Caffe2Xavier) ran

    def kernels(self, x: Tensor) -> Tensor:
        """Softmax-normalised reassembly kernels, (N, k*k*G, ceil(H/s), ceil(W/s))."""
        mask = self.content_encoder(self.channel_compressor(x))
        n, _, h, w = mask.shape
        mask = mask.view(n, self.down_group, self.down_kernel ** 2, h, w)
        mask = F.softmax(mask, dim=2)
        return mask.view(n, -1, h, w)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.kernels(x)
        x = carafe_down_cpu(x, mask, self.down_kernel, self.down_group, self.scale_factor)
        return self.conv(x)


@MODELS.register_module()
class FPGCarafe(FPG):
    """mmdet's FPG plus the ``carafe_down`` transition type (see the module docstring)."""

    transition_types = {**FPG.transition_types, 'carafe_down': CarafeDownConv}

    def init_weights(self) -> None:
        """FPG's init, then the inits its ``init_cfg`` overwrote in nested transitions.

        mmengine's ``BaseModule.init_weights`` applies FPG's ``Caffe2Xavier`` to *every*
        ``nn.Conv2d`` below it but only recurses into *direct* children, so the transitions
        (inside ``ModuleList``/``ModuleDict``) never run their own ``init_weights``. We restore
        (a) the CARAFE kernel predictor's init (near-uniform kernels) and (b) mmcv's DCNv2
        init (zero offsets, mask logits 0 -> 0.5): DCNv2 starts as a plain conv, as intended
        by mmcv, instead of with Xavier-random offsets.
        """
        super().init_weights()
        from mmcv.ops import ModulatedDeformConv2dPack

        for m in self.modules():
            if isinstance(m, CarafeDownConv):
                m._init_predictor()
            elif isinstance(m, ModulatedDeformConv2dPack):
                m.init_weights()


def example_neck_cfg(norm_cfg: dict | None = None, channels: int = 256,
                     in_channels=(256, 512, 1024, 2048), stack_times: int = 9,
                     dcn_cfg: dict | None = None) -> dict:
    """The enhanced-FPG neck dict (mmdet's configs/fpg settings + DCNv2 up + CARAFE down)."""
    norm_cfg = copy.deepcopy(norm_cfg or dict(type='BN', requires_grad=True))
    dcn_cfg = copy.deepcopy(dcn_cfg or dict(type='DCNv2', deform_groups=1))
    act_conv_norm = ('act', 'conv', 'norm')
    return dict(
        type='FPGCarafe',
        in_channels=list(in_channels),
        out_channels=channels,
        inter_channels=channels,
        num_outs=5,
        stack_times=stack_times,
        paths=['bu'] * stack_times,
        same_down_trans=None,
        same_up_trans=dict(
            type='carafe_down', scale_factor=2, down_kernel=5, down_group=1,
            encoder_kernel=3, encoder_dilation=1, compressed_channels=64, kernel_size=3,
            norm_cfg=norm_cfg, inplace=False, order=act_conv_norm),
        across_lateral_trans=dict(
            type='conv', kernel_size=1, norm_cfg=norm_cfg, inplace=False, order=act_conv_norm),
        across_down_trans=dict(
            type='interpolation_conv', mode='nearest', kernel_size=3, conv_cfg=dcn_cfg,
            norm_cfg=norm_cfg, order=act_conv_norm, inplace=False),
        across_up_trans=None,
        across_skip_trans=dict(
            type='conv', kernel_size=1, norm_cfg=norm_cfg, inplace=False, order=act_conv_norm),
        output_trans=dict(
            type='last_conv', kernel_size=3, order=act_conv_norm, inplace=False),
        norm_cfg=norm_cfg,
        # mmdet's pattern (level i skips the first 4 - i stacks), cut to stack_times
        skip_inds=[tuple(range(min(4 - i, stack_times))) for i in range(5)])
