"""Fixes for the known incompatibilities of our pinned stack, in one place.

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

3. instaboostfast 0.1.2 (mmdet's InstaBoost transform, Table 2's augmentation row) calls
   ``np.subtract(contours, 1)`` on a list of contours of different lengths; numpy >= 1.24
   refuses ragged arrays, so any instance whose augmented mask has two or more contours
   crashes the data pipeline. ``binary_mask_to_polygon`` is re-bound to the same algorithm
   with the subtraction done per contour (the only change), in both modules that use it.

4. mmengine's ``Runner.save_checkpoint`` stores ``cfg.pretty_text`` in every checkpoint, and
   ``pretty_text`` formats the whole config with yapf each time: 3.6 s for the FPG rows'
   config (the torch.save of the weights takes 0.6 s). Short overlay schedules save often, so
   this was ~40% of an FPG row's training time at ``mini``. yapf's result depends only on its
   input text and style, so ``FormatCode`` as mmengine's config module calls it is memoised
   on exactly those: the text stored in the checkpoint is unchanged, byte for byte.

5. mmengine resolves every ``mmdet::_base_/...`` of a config by first parsing all of mmdet's
   ~200 model-index metafiles (``_get_cfg_metainfo``, 0.3 s) and only then, not finding a
   ``_base_`` file there, joining the path. Our rows' configs name four such bases: 1.3 s per
   ``Config.fromfile``, several times per pipeline job. The parsed index of an installed
   package does not change while a process runs: it is read once per package path.

``install()`` is idempotent and is called by ``seesaw_lvis.models`` (so any mmdet config with
``custom_imports=dict(imports=['seesaw_lvis.models'])`` gets it) and by our engine entry points.
"""
from __future__ import annotations

import functools

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


def _instaboost_binary_mask_to_polygon(binary_mask, tolerance=0):
    """instaboostfast.pycococreater.binary_mask_to_polygon, per-contour subtraction."""
    from instaboostfast.pycococreater import close_contour
    from skimage import measure

    polygons = []
    padded = np.pad(binary_mask, pad_width=1, mode="constant", constant_values=0)
    for contour in measure.find_contours(padded, 0.5):
        contour = close_contour(np.subtract(contour, 1))
        contour = measure.approximate_polygon(contour, tolerance)
        if len(contour) < 3:
            continue
        segmentation = np.flip(contour, axis=1).ravel().tolist()
        polygons.append([0 if v < 0 else v for v in segmentation])  # padding may give -0.5
    return polygons


def fix_instaboost_ragged_contours() -> None:
    try:
        import instaboostfast.affine_transform as affine
        import instaboostfast.pycococreater as creator
    except ImportError:  # InstaBoost not installed: nothing to fix
        return
    creator.binary_mask_to_polygon = _instaboost_binary_mask_to_polygon
    affine.binary_mask_to_polygon = _instaboost_binary_mask_to_polygon


def _memoised_format_code(format_code):
    @functools.lru_cache(maxsize=16)
    def cached(text: str, style: tuple, kwargs: tuple):
        return format_code(text, style_config=dict(style), **dict(kwargs))

    def format_code_memoised(text, style_config=None, **kwargs):
        if not isinstance(style_config, dict):  # a style name or file: not ours to cache
            return format_code(text, style_config=style_config, **kwargs)
        return cached(text, tuple(sorted(style_config.items())), tuple(sorted(kwargs.items())))

    format_code_memoised.original = format_code
    return format_code_memoised


def memoise_config_formatting() -> None:
    """Item 4: ``mmengine.config.config.FormatCode`` answers repeated texts from a cache."""
    import mmengine.config.config as config_module

    if not hasattr(config_module.FormatCode, "original"):
        config_module.FormatCode = _memoised_format_code(config_module.FormatCode)


@functools.lru_cache(maxsize=None)
def _config_index(package_path: str) -> dict:
    """``{config name: metafile entry}`` of an installed package, as mmengine builds it."""
    import os.path as osp
    import warnings

    from mmengine.fileio import load

    index: dict = {}
    for meta_path in load(osp.join(package_path, ".mim", "model-index.yml"))["Import"]:
        for model_cfg in load(osp.join(package_path, ".mim", meta_path))["Models"]:
            if "Config" not in model_cfg:
                warnings.warn(f"There is not `Config` define in {model_cfg}")
                continue
            index.setdefault(model_cfg["Config"].partition("/")[-1], model_cfg)  # first wins
    return index


def _cfg_metainfo(package_path: str, cfg_path: str) -> dict:
    """``mmengine.config.utils._get_cfg_metainfo`` with the index read once."""
    index = _config_index(package_path)
    if cfg_path not in index:
        raise ValueError(f"Expected configs: {index.keys()}, but got {cfg_path}")
    return index[cfg_path]


def cache_config_index() -> None:
    """Item 5: mmengine looks external configs up in a per-process index."""
    import mmengine.config.utils as config_utils

    config_utils._get_cfg_metainfo = _cfg_metainfo


def install() -> None:
    global _installed
    if _installed:
        return
    allow_mmengine_checkpoints()
    restore_numpy_float_alias()
    fix_instaboost_ragged_contours()
    memoise_config_formatting()
    cache_config_index()
    _installed = True
