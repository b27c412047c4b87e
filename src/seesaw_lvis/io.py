"""Atomic file output: every artifact of the pipeline is written through here.

A reader (Snakemake, DVC, a person) must never see a half-written file at a final
path, even when the writer is killed mid-way (SIGKILL, preemption, disk full). So we
write to a temporary sibling in the same directory (same filesystem, so the final
``os.replace`` is atomic) and only then move it into place.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_dir", "write_text", "write_json", "read_json", "read_checkpoint",
           "checkpoint_iterations"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; on success it replaces ``path``.

    An existing ``path`` is only removed once the new content is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Deterministic JSON (sorted keys, fixed separators) written atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, separators=(",", ": ") if indent else (",", ":"))
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, naming the file in the error when it is missing or malformed."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_checkpoint(path: str | os.PathLike) -> Any:
    """A torch checkpoint on the CPU, tensors memory-mapped (reading a 150 MB detector's meta
    costs no copy of its weights): ``weights_only``, with the mmengine types that
    :mod:`seesaw_lvis.compat` allow-lists, never arbitrary pickles."""
    from seesaw_lvis import compat

    compat.install()
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) format: no mmap
        return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_iterations(path: str | os.PathLike) -> int | None:
    """The training iterations an mmengine checkpoint was saved after (its ``meta.iter``), or
    None when it does not say (a plain state dict)."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    it = meta.get("iter") if isinstance(meta, dict) else None
    return None if it is None else int(it)
