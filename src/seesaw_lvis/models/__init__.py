"""Models of the re-created entry, registered in mmdet's ``MODELS`` registry.

``custom_imports=dict(imports=['seesaw_lvis.models'], allow_failed_imports=False)`` in a
config (or ``import seesaw_lvis.models``) registers everything: this package imports its
own ``losses`` and then every other sub-package/module of
``seesaw_lvis.models`` (heads, necks, ... written alongside), in name order, so a new
module registers without editing this file. An error in one of them is raised, not
swallowed. It also applies ``seesaw_lvis.compat.install()`` (the fixes for the pinned
mmdet/mmcv/torch stack).
"""
from __future__ import annotations

import importlib
import pkgutil

from seesaw_lvis import compat

def _import_submodules() -> list[str]:
    names = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}")
        names.append(info.name)
    return names


compat.install()  # first: checkpoint allow-list and the lvis numpy alias

from . import losses  # noqa: E402,F401  (registration side effects)

SUBMODULES = _import_submodules()

__all__ = ["losses", "SUBMODULES"]
