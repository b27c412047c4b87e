"""Fixes for the two known incompatibilities of our pinned stack, in one place.

1. torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``. mmengine 0.10.7 calls
   ``torch.load`` without the argument, and its own checkpoints hold more than tensors: the
   message hub's ``HistoryBuffer`` objects with numpy arrays inside, numpy scalars in
   ``meta``. Loading or resuming then fails with "Weights only load failed". We do NOT pass
   ``weights_only=False`` (that would execute arbitrary pickles from any checkpoint); we
   allow-list exactly the types mmengine writes, with ``torch.serialization.add_safe_globals``.
   One of them is ``builtins.getattr``: ``HistoryBuffer.__getstate__`` stores its statistics
   methods, which pickle as ``getattr(HistoryBuffer, 'mean')``. A free ``getattr`` would
   reopen the hole weights_only closes (attribute chains reach any module), so that name is
   bound to :func:`history_buffer_method`, which resolves only HistoryBuffer's statistics.
   ``tests/unit/test_compat.py`` checks a real runner checkpoint needs nothing beyond them.

2. lvis 0.5.3 (the PyPI release mmdet's LVISMetric imports) still uses ``np.float``, removed
   in numpy 1.24; its evaluation crashes with AttributeError. numpy's own deprecation
   note says ``np.float`` was an alias of the builtin ``float``, so we restore exactly that
   alias (and nothing else) when it is missing. No numpy behaviour changes.

``install()`` is idempotent and is called by ``seesaw_lvis.models`` (so any mmdet config with
``custom_imports=dict(imports=['seesaw_lvis.models'])`` gets it) and by our engine entry points.
"""
from __future__ import annotations

import numpy as np

_installed = False


def checkpoint_safe_globals() -> list:
    """The exact non-tensor types found in mmengine 0.10.7 checkpoints (numpy 1.x and 2.x)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar

    dtype_classes = [type(np.dtype(t)) for t in
                     (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                      np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)]
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def history_buffer_method(owner, name: str):
    """``getattr`` restricted to HistoryBuffer's registered statistics methods."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is not HistoryBuffer or name not in HistoryBuffer._statistics_methods | {
            "min": 0, "max": 0, "current": 0, "mean": 0}:
        raise RuntimeError(f"checkpoint asks for getattr({owner!r}, {name!r}): refused, only "
                           "HistoryBuffer statistics methods may be restored")
    return getattr(HistoryBuffer, name)


def allow_mmengine_checkpoints() -> None:
    import torch

    torch.serialization.add_safe_globals(
        [*checkpoint_safe_globals(), (history_buffer_method, "builtins.getattr")])


def restore_numpy_float_alias() -> None:
    """lvis 0.5.3 calls ``np.float``: alias it to the builtin ``float`` as numpy < 1.24 did."""
    if "float" not in np.__dict__:
        np.float = float  # type: ignore[attr-defined]


def install() -> None:
    global _installed
    if _installed:
        return
    allow_mmengine_checkpoints()
    restore_numpy_float_alias()
    _installed = True
