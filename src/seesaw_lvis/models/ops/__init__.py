"""Device-agnostic versions of the mmcv 2.1 ops that lack a CPU kernel.

* :mod:`.carafe` -- ``carafe`` (CARAFE upsampling), ``carafe_down_cpu`` (CARAFE++
  downsampling); importing this package patches mmcv's ``CARAFEPack.feature_reassemble``
  so ``upsample_cfg=dict(type='carafe', ...)`` runs on CPU (mmcv's kernel stays in use on
  CUDA). Why a method patch and not a new registered type: see :mod:`.carafe`.
* :mod:`.deform_roi_pool` -- ``deform_roi_pool`` / ``DeformRoIPoolAnyDevice`` with mmcv's
  ``DeformRoIPool`` semantics; with no offset it is RoIAlign, and importing this package
  patches ``mmcv.ops.roi_align`` so a CPU training pass of every ``RoIAlign`` layer uses it
  (its backward is one CSR product instead of mmcv 2.1's scalar CPU loop: forward + backward
  1.5-3.1x faster on `mini`'s RoI shapes, ``bench ops``; evaluation and CUDA keep mmcv's kernel).
* :mod:`.sparse` -- the CSR constructor both of the sampling ops above use.
* :mod:`.patch` -- ``MmcvPatch``: how each patch above replaces one mmcv attribute, keeps
  mmcv's original beside it and restores it.
* :mod:`.modulated_deform_conv` -- ``modulated_deform_conv2d_cpu`` (DCNv2 with mmcv's
  ``ModulatedDeformConv2d`` semantics, bilinear sampling as a CSR product with an explicit
  backward: ~9x faster forward + backward than mmcv 2.1's scalar CPU kernel); importing this package patches
  ``mmcv.ops.modulated_deform_conv.modulated_deform_conv2d`` so every ``type='DCNv2'`` layer
  uses it for CPU tensors (mmcv's kernel stays in use on CUDA). See :mod:`.modulated_deform_conv`.

The dispatchers are reached through their modules --
``seesaw_lvis.models.ops.carafe.carafe``,
``seesaw_lvis.models.ops.deform_roi_pool.deform_roi_pool`` / ``.roi_align`` and
``seesaw_lvis.models.ops.modulated_deform_conv.modulated_deform_conv2d`` -- and deliberately not
re-exported here: a package attribute named like a submodule would shadow it (``import seesaw_lvis.models.ops.carafe as m`` would then give the function).
"""
from . import carafe, deform_roi_pool, modulated_deform_conv  # noqa: F401  (submodules)
from .carafe import carafe_cpu, carafe_down_cpu, install as install_carafe
from .deform_roi_pool import DeformRoIPoolAnyDevice, deform_roi_pool_cpu, install as install_roi_align
from .modulated_deform_conv import install as install_dcnv2, modulated_deform_conv2d_cpu

install_carafe()
install_dcnv2()
install_roi_align()

__all__ = ["carafe", "deform_roi_pool", "modulated_deform_conv", "carafe_cpu", "carafe_down_cpu",
           "install_carafe", "deform_roi_pool_cpu", "DeformRoIPoolAnyDevice", "install_roi_align",
           "modulated_deform_conv2d_cpu", "install_dcnv2"]
