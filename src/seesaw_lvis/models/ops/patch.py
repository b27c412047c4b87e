"""One replaced mmcv attribute: how each CPU op of this package takes over mmcv's.

mmcv's layers look their op up at call time (``RoIAlign.forward`` calls the module-level
``roi_align``, ``ModulatedDeformConv2d.forward`` calls ``modulated_deform_conv2d``,
``CARAFEPack.forward`` its own ``feature_reassemble``), so replacing that one attribute moves
every layer built from the unchanged configs onto our dispatcher. mmcv's original is kept on the
same owner, under ``_seesaw_lvis_original_<name>``, so a dispatcher can still call it (CUDA,
evaluation) and :meth:`MmcvPatch.uninstall` can restore it (tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class MmcvPatch:
    owner: Callable[[], Any]   # the module or class holding the attribute (imported on first use)
    name: str                  # the attribute replaced
    replacement: Any           # ours
    reexported: bool = False   # mmcv.ops re-exports the attribute under the same name

    @property
    def _saved(self) -> str:
        return f"_seesaw_lvis_original_{self.name}"

    def original(self) -> Any:
        """mmcv's own attribute, installed or not."""
        owner = self.owner()
        return getattr(owner, self._saved, None) or getattr(owner, self.name)

    def _set(self, value: Any) -> None:
        setattr(self.owner(), self.name, value)
        if self.reexported:
            import mmcv.ops

            setattr(mmcv.ops, self.name, value)

    def install(self) -> None:
        """Idempotent."""
        setattr(self.owner(), self._saved, self.original())
        self._set(self.replacement)

    def is_installed(self) -> bool:
        return getattr(self.owner(), self.name) is self.replacement

    def uninstall(self) -> None:
        """Restore mmcv's attribute (for tests)."""
        original = getattr(self.owner(), self._saved, None)
        if original is not None:
            self._set(original)
            setattr(self.owner(), self._saved, None)
