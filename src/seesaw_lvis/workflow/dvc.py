"""dvc.yaml, generated from the stage list (seesaw_lvis.workflow.stages), never edited by hand."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from seesaw_lvis.io import write_text
from seesaw_lvis.workflow.stages import Stage, dvc_yaml, sinks, stages, upstream

HEADER = """\
# GENERATED from params/ by seesaw_lvis.workflow.stages (`python -m seesaw_lvis dvc-yaml`;
# every `snakemake` run regenerates it). Do not edit: change params/ or the stage list.
# The same stages as the Snakemake rules: same commands, deps and outs.
"""


def render(params: Mapping[str, Any]) -> str:
    return HEADER + yaml.safe_dump(dvc_yaml(params), sort_keys=False, width=200)


def sync_dvc_yaml(params: Mapping[str, Any], path: str | Path = "dvc.yaml") -> bool:
    """Write dvc.yaml if its content differs; True when it changed."""
    path = Path(path)
    text = render(params)
    if path.is_file() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


def _mtime_range(path: Path) -> tuple[float, float]:
    """(oldest, newest) modification time of a file, or of the files inside a directory."""
    if not path.is_dir():
        t = path.stat().st_mtime
        return t, t
    times = [f.stat().st_mtime for f in path.rglob("*") if f.is_file()] or [path.stat().st_mtime]
    return min(times), max(times)


def up_to_date_stages(stage_list: list[Stage]) -> list[str]:
    """Stages whose outputs all exist and are newer than all their inputs (Snakemake's rule)."""
    ranges: dict[Path, tuple[float, float]] = {}  # the dataset dir is a dep of ~30 stages: walk it once

    def mtimes(path: Path) -> tuple[float, float]:
        if path not in ranges:
            ranges[path] = _mtime_range(path)
        return ranges[path]

    done = []
    for s in stage_list:
        outs = [Path(o) for o in s.all_outs]
        deps = [Path(d) for d in s.deps]
        if not all(o.exists() for o in outs) or not all(d.exists() for d in deps):
            continue
        if min(mtimes(o)[0] for o in outs) >= max(mtimes(d)[1] for d in deps):
            done.append(s.name)
    return done


def commit_to_dvc(params: Mapping[str, Any]) -> list[str]:
    """Record what Snakemake built in dvc.lock and DVC's cache, so `dvc status` is clean and
    `dvc repro` has nothing to do. One `dvc commit` for all finished stages, waiting for DVC's
    repository lock, so concurrent callers serialise instead of corrupting dvc.lock.
    --no-relink: the workspace files stay as Snakemake wrote them (a relink would give them new
    mtimes in DVC's order, and Snakemake would then see outputs older than their inputs)."""
    import subprocess
    import sys

    all_stages = stages(params)
    names = up_to_date_stages(all_stages)
    if not names:
        return names
    dvc = [sys.executable, "-m", "dvc", "--wait-for-lock", "commit", "--force", "--no-relink", "--quiet"]
    if len(names) == len(all_stages):
        # DVC re-reads dvc.yaml and dvc.lock for each target (~3 s a stage at 32 stages): when
        # every stage is done, as after a successful run, one untargeted commit does them all.
        subprocess.run(dvc, check=True)
        return names
    # A finished target (a stage nothing reads, e.g. the report or the sweep's, with everything
    # it reads) is one target with --with-deps: after `snakemake all` the sweep's stages are
    # not built, and naming the 50 others one by one would cost minutes.
    done, heads, covered = set(names), [], set()
    for head in sinks(all_stages):
        needed = upstream(all_stages, [head])
        if needed <= done:
            heads.append(head)
            covered |= needed
    if heads:
        subprocess.run([*dvc, "--with-deps", *heads], check=True)
    rest = [n for n in names if n not in covered]
    if rest:
        subprocess.run([*dvc, *rest], check=True)
    return names

