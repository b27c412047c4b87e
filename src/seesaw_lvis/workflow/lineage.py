"""Lineage digests: each stage records a digest of its own inputs in an output its dependants read.

Why: Snakemake and DVC decide what to re-run by different rules, and without this they
disagree after a change that leaves a stage's outputs byte-identical.

* Snakemake plans the whole DAG before running anything: a job whose input is newer (mtime)
  than its outputs re-runs, and so does everything downstream of it, because those inputs
  "will be updated".
* DVC decides stage by stage, after the stage's predecessors ran, by content hashes: a stage
  whose deps hash as recorded in dvc.lock is skipped.

So a comment-only edit of a row config re-runs ``train_<row>`` under both tools; the work
dir is keyed by the resolved config (which ignores comments), training resumes to the same
checkpoint and ``final.pth`` comes out byte-identical; Snakemake then re-runs evaluation and
the report, DVC skips them. The same happens for a comment-only edit of the code of
``data`` or ``stats``, or a params change that does not change a stage's output.

The fix: every stage writes :func:`stage_lineage` (a digest of its deps' content and of its
params' values) into an output its dependants depend on:

* ``data``: ``<dataset dir>/lineage.json``;
* ``stats``: the ``"lineage"`` key of ``class_freq.json``;
* ``train_<row>``: ``meta["lineage"]`` of ``final.pth``;
* ``evaluate_<row>``: ``meta.lineage`` of ``metrics.json``;
* ``report``: nothing (no stage reads its outputs).

A stage that re-runs because any input changed then always changes an output, so DVC re-runs
its dependants too, exactly the set Snakemake planned. Outputs stay deterministic (the
digest is a function of the inputs only: no times, no absolute paths), so a stage re-run on
unchanged inputs still writes identical files and DVC keeps skipping what follows.

Directory deps (the dataset, ~100 GB of images at full scale) are never hashed by content:
the digest takes the ``lineage.json`` the data stage wrote there, or, for a directory
without one, a listing of its files' relative names and sizes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

LINEAGE_FILE = "lineage.json"  # inside a directory output (the dataset)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dep_digest(path: str | Path) -> str:
    """The digest of one dep: a file's sha256; a directory's ``lineage.json`` (or listing)."""
    from seesaw_lvis.data.download import file_digest

    path = Path(path)
    if path.is_dir():
        stamp = path / LINEAGE_FILE
        if stamp.is_file():
            return "lineage:" + _sha256(stamp.read_bytes())
        listing = sorted((p.relative_to(path).as_posix(), p.stat().st_size)
                         for p in path.rglob("*") if p.is_file())
        return "listing:" + _sha256(_canonical(listing))
    if path.is_file():
        return file_digest(path)
    return "missing"  # only outside the pipeline: both tools check every dep exists first


def stage_lineage(params: Mapping[str, Any], stage_name: str) -> dict[str, str] | None:
    """``{"stage", "inputs_sha256", "params_sha256"}`` of a pipeline stage, from the cwd
    (the repository root, where stages run); None when there is no such stage (standalone
    use of a CLI verb, or a cwd outside a checkout), and the caller records no lineage.

    Why the job rebuilds the stage list instead of being handed its deps: the digest must cover
    exactly the deps and params that both DAG tools declare for the stage, and that list has one
    source (``workflow.stages``). A second copy (on the command line, in a file the DAG writes)
    would be a second source that can drift, and a dep list or digest in the command would make
    DVC's recorded ``cmd`` change with file contents. The rebuild parses config files' syntax
    only (no mmdet import): 0.4 s per job, measured 2026-12-03, against 10-20 s of imports."""
    from seesaw_lvis.workflow import stages as S

    if not (S.CONFIG_DIR).is_dir():  # not run from a checkout: the stage list can't be built
        log.info("no lineage recorded for %s: %s not found from %s", stage_name, S.CONFIG_DIR, Path.cwd())
        return None
    stage = next((s for s in S.stages(params) if s.name == stage_name), None)
    if stage is None:
        log.info("no lineage recorded: %s is not a stage of the pipeline", stage_name)
        return None
    inputs = [(dep, dep_digest(dep)) for dep in sorted(set(stage.deps))]
    return {"stage": stage.name,
            "inputs_sha256": _sha256(_canonical(inputs)),
            "params_sha256": _sha256(_canonical(S.param_values(params, stage.params)))}
