"""Device-agnostic versions of the mmcv 2.1 ops that lack a CPU kernel.

* :mod:`.carafe` -- ``carafe`` (CARAFE upsampling), ``carafe_down_cpu`` (CARAFE++
  downsampling); importing this package patches mmcv's ``CARAFEPack.feature_reassemble``
  so ``upsample_cfg=dict(type='carafe', ...)`` runs on CPU (mmcv's kernel stays in use on
  CUDA). Why a method patch and not a new registered type: see :mod:`.carafe`.
* :mod:`.deform_roi_pool` -- ``deform_roi_pool`` / ``DeformRoIPoolAnyDevice`` with mmcv's
  ``DeformRoIPool`` semantics.

The dispatchers are reached through their modules --
``seesaw_lvis.models.ops.carafe.carafe`` and
``seesaw_lvis.models.ops.deform_roi_pool.deform_roi_pool`` -- and deliberately not
re-exported here: a package attribute named like a submodule would shadow it (``import seesaw_lvis.models.ops.carafe as m`` would then give the function).
"""
from . import carafe, deform_roi_pool  # noqa: F401  (submodules, see above)
from .carafe import carafe_cpu, carafe_down_cpu, install as install_carafe
from .deform_roi_pool import DeformRoIPoolAnyDevice, deform_roi_pool_cpu

install_carafe()

__all__ = ["carafe", "deform_roi_pool", "carafe_cpu", "carafe_down_cpu", "install_carafe",
           "deform_roi_pool_cpu", "DeformRoIPoolAnyDevice"]
