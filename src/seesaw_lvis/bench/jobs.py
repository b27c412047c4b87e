"""Where a finished Snakemake run spent its time: `python -m seesaw_lvis bench jobs`.

Reads the run's own log (``.snakemake/log/<start>.snakemake.log``, default: the newest that
reached "100% done"), which stamps every job's start and its "Finished jobid" line, and writes
``reports/bench/jobs.json``: the run's wall time (Snakemake's "Elapsed time"), the job-seconds
summed per group (``train`` / ``evaluate`` per table, ``pretrain``, ...) with their share, and
every job's seconds. Jobs run side by side, so job-seconds over wall time is the parallelism
the cores gave. The log is the record of the run that was timed (`make demo` writes it), so
the figure comes from the run itself, not from a second timing.

Each job's own log (the stage's ``logs/<rule>/...log``) adds what a job spends outside its
work: the seconds from its start to its first log line and from its last log line to its end
(imports, config, tracking store; a lower bound of the per-process start-up and shut-down),
counted only from log lines inside the job's window (a log rewritten by a later run says
nothing about this one).
"""
from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import write_json
from seesaw_lvis.workflow.stages import Stage, stages

_STAMP = re.compile(r"^\[(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\S+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_DONE = re.compile(r"^Finished jobid: (\d+)")
_ELAPSED = re.compile(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")  # the CLI's logging format


def _stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")


def parse(text: str, source: str = "<log>") -> dict[str, Any]:
    """Jobs (rule, start, seconds; unfinished ones without seconds) and the elapsed time."""
    now = rule = None
    started: dict[str, tuple[str, dt.datetime]] = {}
    jobs: list[dict[str, Any]] = []
    elapsed = None
    for line in text.splitlines():
        if m := _STAMP.match(line):
            now = _stamp(m.group(1))
        elif m := _RULE.match(line):
            rule = m.group(1)
        elif (m := _JOBID.match(line)) and rule is not None and now is not None:
            started[m.group(1)] = (rule, now)
            rule = None
        elif (m := _DONE.match(line)) and m.group(1) in started:
            name, begin = started.pop(m.group(1))
            jobs.append({"stage": name, "start": begin.isoformat(), "seconds": (now - begin).total_seconds()})
        elif m := _ELAPSED.match(line):
            elapsed = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    if not jobs:
        raise ValueError(f"{source}: no finished Snakemake job in this log")
    unfinished = [{"stage": name, "start": begin.isoformat()} for name, begin in started.values()]
    return {"jobs": jobs, "unfinished": unfinished, "elapsed_s": elapsed}


def group_of(name: str, stage: Stage | None, params: Mapping[str, Any]) -> str:
    """'train table 1', 'evaluate table 2', 'train sweep', 'pretrain', 'report', ... (a stage
    the params no longer have: the first word of its name)."""
    if stage is not None and stage.row is not None:
        row = params["rows"].get(stage.row)  # the grid's cells are not rows of the tables
        return f"{stage.resources['kind']} " + (f"table {row['table']}" if row else "sweep")
    return name.split("_")[0]


def _window(job: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """A finished job's (start, end)."""
    begin = dt.datetime.fromisoformat(job["start"])
    return begin, begin + dt.timedelta(seconds=job["seconds"])


def outside_log(job: Mapping[str, Any], log_text: str) -> tuple[float, float] | None:
    """(seconds before the job's first log line, seconds after its last), from the lines
    stamped inside the job's window (Snakemake stamps whole seconds: 1 s of slack); None
    when none is."""
    begin, end = _window(job)
    slack = dt.timedelta(seconds=1)
    stamps = [t for m in map(_LOG_LINE.match, log_text.splitlines()) if m
              for t in [dt.datetime.fromisoformat(m.group(1)) + dt.timedelta(milliseconds=int(m.group(2)))]
              if begin - slack <= t <= end + slack]
    if not stamps:
        return None
    return max(0.0, (min(stamps) - begin).total_seconds()), max(0.0, (end - max(stamps)).total_seconds())


def summarize(parsed: Mapping[str, Any], params: Mapping[str, Any], repo: Path = Path(".")) -> dict[str, Any]:
    jobs = [dict(j) for j in parsed["jobs"]]   # the per-job figures below go on copies
    total = sum(j["seconds"] for j in jobs)
    by_name = {s.name: s for s in stages(params)}
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "seconds": 0.0})
    outside = {"jobs": 0, "seconds": 0.0}
    for j in jobs:
        stage = by_name.get(j["stage"])
        g = groups[group_of(j["stage"], stage, params)]
        g["jobs"] += 1
        g["seconds"] += j["seconds"]
        log = repo / stage.log if stage is not None else None
        found = outside_log(j, log.read_text(encoding="utf-8", errors="replace")) \
            if log is not None and log.is_file() else None
        if found is not None:
            j["before_first_log_s"], j["after_last_log_s"] = found
            outside["jobs"] += 1
            outside["seconds"] += sum(found)
    wall = parsed["elapsed_s"]
    if wall is None:  # a log cut short: first start to last finish
        windows = [_window(j) for j in jobs]
        wall = (max(e for _, e in windows) - min(b for b, _ in windows)).total_seconds()
    return {
        "wall_s": wall, "wall_min": wall / 60, "job_seconds": total,
        "parallelism": total / wall if wall else None,
        "groups": {k: {**v, "share": v["seconds"] / total if total else None}
                   for k, v in sorted(groups.items(), key=lambda kv: -kv[1]["seconds"])},
        "outside_job_logs": {**outside, "share": outside["seconds"] / total if total else None},
        "jobs": sorted(jobs, key=lambda j: -j["seconds"]), "unfinished": parsed["unfinished"],
    }


def newest_complete_log(repo: Path) -> Path:
    logs = sorted((repo / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True)
    for path in logs:
        if "(100%) done" in path.read_text(encoding="utf-8", errors="replace"):
            return path
    raise FileNotFoundError(f"{repo / '.snakemake' / 'log'}: no Snakemake log of a run that completed "
                            f"(run `snakemake --cores all all` first, or pass --snakemake-log)")


def run(params: Mapping[str, Any], out: Path, log_file: Path | None = None, repo: Path = Path(".")) -> dict[str, Any]:
    log_file = Path(log_file) if log_file else newest_complete_log(repo)
    if not log_file.is_file():
        raise FileNotFoundError(f"{log_file}: no such Snakemake log")
    result = {"log": str(log_file), "scale": params["scale"], "dataset": params["dataset"],
              **summarize(parse(log_file.read_text(encoding="utf-8", errors="replace"), str(log_file)), params, repo)}
    write_json(out, result)
    return result
