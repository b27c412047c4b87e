"""Share what a pipeline computed: a DVC remote from params, push, and a pull after which
neither DAG tool has anything to do.

``params.dvc`` (schema-validated; every key may be null, the default, which needs nothing):

* ``remote``: a URL or path (``s3://bucket/prefix``, ``/shared/project/dvc-remote``, ...),
  ``remote_options``: its ``dvc remote modify`` settings (``endpointurl``, ``region``, ...;
  never credentials: S3 reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or a profile
  from the environment);
* ``cache_dir``, ``cache_shared``, ``cache_type``: DVC's ``cache.dir``, ``cache.shared`` and
  ``cache.type`` (a cluster: a cache on the shared filesystem, ``group``, and links rather than
  copies of 100 GB: ``[reflink, hardlink, symlink, copy]``).

:func:`configure` writes them to ``.dvc/config.local`` through DVC's own config API (this
machine's settings, from the committed params; a clone runs it too). :func:`push` is ``dvc
push``. :func:`pull` is ``dvc fetch`` and a check (``dvc status --cloud``) that the cache then
holds every output: a remote that cannot be read, or lacks objects, leaves the workspace as it
was. Then ``dvc checkout``, a check that ``dvc status`` is clean for what was
pulled, and one more step Snakemake needs: checkout writes files in DVC's order, so an output
can come out older than its inputs, which Snakemake's mtime trigger reads as "re-run". Every
stage DVC reports up to date gets its outputs' times set in dependency order, after its sources
(only times: DVC has just checked their content against dvc.lock), and ``snakemake -n all``
then plans nothing for them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from seesaw_lvis.workflow.stages import Stage, stages, upstream

log = logging.getLogger(__name__)

REMOTE_NAME = "seesaw"


class RemoteError(RuntimeError):
    """The DVC remote is not set, cannot be read or written, or a pull left stages out of date."""


def _settings(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"remote": None, "remote_options": {}, "cache_dir": None, "cache_shared": None, "cache_type": None,
            **(params.get("dvc") or {})}


def configure(params: Mapping[str, Any], root: str | os.PathLike = ".") -> str | None:
    """``params.dvc`` into ``<root>/.dvc/config.local``; returns the remote's URL (None: none)."""
    from dvc.config import ConfigError

    conf = _settings(params)
    try:
        _write_config(root, conf)
    except ConfigError as e:   # e.g. an option the remote's kind does not have
        raise RemoteError(f"params dvc (remote {conf['remote']}, options {conf['remote_options']}): {e}") from None
    return conf["remote"]


def _write_config(root: str | os.PathLike, conf: Mapping[str, Any]) -> None:
    from dvc.repo import Repo

    with Repo(str(root)) as repo, repo.config.edit("local") as local:
        if conf["remote"]:
            local["remote"][REMOTE_NAME] = {"url": str(conf["remote"]),
                                            **{k: str(v) for k, v in (conf["remote_options"] or {}).items()}}
            local["core"]["remote"] = REMOTE_NAME
        else:
            local["remote"].pop(REMOTE_NAME, None)
            if local["core"].get("remote") == REMOTE_NAME:
                del local["core"]["remote"]
        for key, value in (("dir", conf["cache_dir"]), ("shared", conf["cache_shared"]),
                           ("type", ",".join(conf["cache_type"] or []) or None)):
            if value:
                local["cache"][key] = str(value)
            else:
                local["cache"].pop(key, None)


def _dvc(root: Path, *args: str, quiet: bool = False) -> subprocess.CompletedProcess:
    """``python -m dvc ARGS`` in ``root``, its stdout captured. Its stderr (progress bars, and the
    reason when it fails) goes to ours, so that a long transfer shows progress, unless ``quiet``."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE if quiet else None, text=True)


def _targets(stage_names: Sequence[str] | None) -> list[str]:
    return ["--with-deps", *stage_names] if stage_names else []


def _require_remote(params: Mapping[str, Any], root: Path) -> str:
    url = configure(params, root)
    if not url:
        raise RemoteError("params dvc.remote is not set (params/pipeline.yaml): name a URL or path to push to "
                          "and pull from (README: reusing a cluster's results)")
    return url


def push(params: Mapping[str, Any], stage_names: Sequence[str] | None = None, root: str | os.PathLike = ".") -> None:
    """``dvc push`` of every stage's outputs (or of ``stage_names`` and what they depend on)."""
    root = Path(root)
    url = _require_remote(params, root)
    proc = _dvc(root, "push", *_targets(stage_names))
    if proc.returncode:
        raise RemoteError(f"dvc push to {url} failed (DVC's reason above):\n{proc.stdout.strip()[-3000:]}")
    log.info("pushed to %s: %s", url, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "done")


def pull(params: Mapping[str, Any], stage_names: Sequence[str] | None = None,
         root: str | os.PathLike = ".") -> list[str]:
    """Fetch, check out and verify every stage's outputs (or ``stage_names`` and their
    upstream), then put their times in dependency order; returns the stages restored."""
    root = Path(root)
    stage_list = stages(params)
    wanted = _closure(stage_list, stage_names) if stage_names else {s.name for s in stage_list}
    url = _require_remote(params, root)
    targets = _targets(stage_names)
    fetched = _dvc(root, "fetch", *targets)   # into the cache only: the workspace is not touched yet
    if fetched.returncode:
        raise RemoteError(f"dvc fetch from {url} failed; the workspace is unchanged (DVC's reason above)")
    # fetch exits 0 even when the remote lacks objects (a remote folder not mounted, a push that
    # did not finish): compare before checking anything out.
    cloud = _dvc(root, "status", "--cloud", "--json", *targets, quiet=True)
    lacking = sorted(path for path, state in json.loads(cloud.stdout or "{}").items()
                     if state in ("missing", "deleted")) if cloud.returncode == 0 else None
    if lacking is None or lacking:
        why = (f"{len(lacking)} output(s) are not in the local cache after it (not on the remote, or not "
               f"readable there), e.g. {', '.join(lacking[:5])}"
               if lacking else f"dvc status --cloud failed: {cloud.stderr.strip()[-2000:]}")
        raise RemoteError(f"dvc fetch from {url} failed; the workspace is unchanged: {why}")
    checkout = _dvc(root, "checkout", *targets)
    if checkout.returncode:
        raise RemoteError(f"dvc checkout after fetching from {url} failed (DVC's reason above)")
    status = _dvc(root, "status", "--json", *targets, quiet=True)
    if status.returncode:
        raise RemoteError(f"dvc status failed:\n{status.stderr.strip()[-3000:]}")
    stale = set(json.loads(status.stdout or "{}"))
    restored = [s for s in stage_list if s.name in wanted and s.name not in stale
                and all((root / o).exists() for o in s.all_outs)]
    missing = sorted(wanted - {s.name for s in restored})
    try:
        order_mtimes(restored, root)
    except PermissionError as e:
        raise RemoteError(f"cannot set the times of a pulled output ({e}): with a shared cache, hardlinks are "
                          "files of whoever fetched them; use cache_type [reflink, symlink, copy]") from None
    log.info("pulled from %s: %d stage(s) restored and up to date%s", url, len(restored),
             f"; not restored (not on the remote, or changed here): {', '.join(missing)}" if missing else "")
    return [s.name for s in restored]


def _closure(stage_list: list[Stage], names: Sequence[str]) -> set[str]:
    """``names`` and every stage upstream of them."""
    unknown = set(names) - {s.name for s in stage_list}
    if unknown:
        raise RemoteError(f"no such stage: {', '.join(sorted(unknown))} (see dvc.yaml)")
    return upstream(stage_list, names)


def order_mtimes(stage_list: list[Stage], root: Path) -> None:
    """Set every output's times (files inside output folders too, and the link itself where an
    output is a link into DVC's cache) so that each stage's outputs are newer than its other
    inputs (a clone's source files, written moments ago) and than the outputs of the stages
    listed before it: ``stage_list`` in dependency order, 1 ms apart."""
    outs = {o for s in stage_list for o in s.all_outs}
    sources = [root / d for s in stage_list for d in s.deps if d not in outs and (root / d).exists()]
    t = max([time.time(), *(p.stat().st_mtime for p in sources)])
    for stage in stage_list:
        t += 1e-3
        for out in stage.all_outs:
            path = root / out
            for p in [*path.rglob("*"), path] if path.is_dir() else [path]:
                os.utime(p, (t, t), follow_symlinks=False)   # a link into the cache: the link itself
                if p.is_symlink():
                    with contextlib.suppress(PermissionError):   # a shared cache's file of another user
                        os.utime(p, (t, t))
