"""`bench jobs`: job times of a finished Snakemake run, read from its own log (a made-up log of
the format Snakemake 9 writes: two jobs side by side, a failed one, the elapsed time)."""
from __future__ import annotations

import json

import pytest

from seesaw_lvis.bench import jobs

LOG = """\
Building DAG of jobs...
Execute 2 jobs...
[Thu Dec  3 13:28:31 2026]
localrule data:
    output: data/synthetic
    jobid: 1
    resources: tmpdir=/tmp
[Thu Dec  3 13:28:31 2026]
localrule train_t1_ce_s0:
    jobid: 4
    wildcards: none
[Thu Dec  3 13:28:38 2026]
Finished jobid: 1 (Rule: data)
1 of 4 steps (25%) done
[Thu Dec  3 13:28:40 2026]
localrule evaluate_t2_tta_s0:
    jobid: 7
[Thu Dec  3 13:31:01 2026]
Finished jobid: 4 (Rule: train_t1_ce_s0)
2 of 4 steps (50%) done
[Thu Dec  3 13:31:02 2026]
localrule train_sweep_p0_q0_s1:
    jobid: 9
[Thu Dec  3 13:32:02 2026]
Finished jobid: 9 (Rule: train_sweep_p0_q0_s1)
3 of 4 steps (75%) done
[Thu Dec  3 13:33:00 2026]
Error in rule evaluate_t2_tta_s0:
Elapsed time: 0:04:30.500000
"""


def test_a_run_log_gives_each_jobs_seconds_and_the_groups(default_params, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)  # the stage list reads the rows' config files
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    out = tmp_path / "bench" / "jobs.json"
    result = jobs.run(default_params, out, log_file=log)
    assert json.loads(out.read_text())["job_seconds"] == result["job_seconds"] == 7 + 150 + 60
    assert {j["stage"]: j["seconds"] for j in result["jobs"]} == {"data": 7, "train_t1_ce_s0": 150,
                                                                 "train_sweep_p0_q0_s1": 60}
    assert result["unfinished"] == [{"stage": "evaluate_t2_tta_s0", "start": "2026-12-03T13:28:40"}]
    assert result["wall_s"] == 270.5
    assert result["parallelism"] == pytest.approx(217 / 270.5)
    groups = result["groups"]
    assert list(groups) == ["train table 1", "train sweep", "data"]  # most job-seconds first
    assert groups["train table 1"] == {"jobs": 1, "seconds": 150, "share": pytest.approx(150 / 217)}


def test_without_elapsed_time_the_wall_is_first_start_to_last_finish(default_params, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    parsed = jobs.parse(LOG.replace("Elapsed time: 0:04:30.500000\n", ""))
    assert parsed["elapsed_s"] is None
    assert jobs.summarize(parsed, default_params)["wall_s"] == (13 * 3600 + 32 * 60 + 2) - (13 * 3600 + 28 * 60 + 31)


def test_the_newest_complete_log_is_found_and_bad_logs_are_named(default_params, tmp_path):
    logs = tmp_path / ".snakemake" / "log"
    with pytest.raises(FileNotFoundError, match="no Snakemake log of a run that completed"):
        jobs.newest_complete_log(tmp_path)
    logs.mkdir(parents=True)
    (logs / "2026-12-03T100000.snakemake.log").write_text(LOG + "4 of 4 steps (100%) done\n")
    (logs / "2026-12-03T110000.snakemake.log").write_text(LOG)  # newer, but it failed
    assert jobs.newest_complete_log(tmp_path).name == "2026-12-03T100000.snakemake.log"
    empty = tmp_path / "empty.log"
    empty.write_text("Building DAG of jobs...\nNothing to be done.\n")
    with pytest.raises(ValueError, match="empty.log: no finished Snakemake job"):
        jobs.run(default_params, tmp_path / "out.json", log_file=empty)
    assert not (tmp_path / "out.json").exists()
    with pytest.raises(FileNotFoundError, match="missing.log: no such Snakemake log"):
        jobs.run(default_params, tmp_path / "out.json", log_file=tmp_path / "missing.log")


def test_time_outside_each_jobs_own_log_is_measured_inside_its_window(default_params, tmp_path, repo_root,
                                                                      monkeypatch):
    """A job's start to its first log line and its last line to its end; a log rewritten by a
    later run (no line inside the job's window) and a job the stage list lacks count nothing."""
    from seesaw_lvis.workflow.stages import stages

    monkeypatch.chdir(repo_root)
    logs = {s.name: tmp_path / s.log for s in stages(default_params)}
    logs["data"].parent.mkdir(parents=True)
    logs["data"].write_text("2026-12-03 13:28:33,500 INFO seesaw_lvis: generating\n"
                            "progress bar without a stamp\n"
                            "2026-12-03 13:28:36,000 INFO seesaw_lvis: written\n")
    logs["train_t1_ce_s0"].parent.mkdir(parents=True)
    logs["train_t1_ce_s0"].write_text("2026-12-03 14:00:00,000 INFO seesaw_lvis: a later run\n")
    (tmp_path / "run.log").write_text(LOG)
    result = jobs.run(default_params, tmp_path / "jobs.json", log_file=tmp_path / "run.log", repo=tmp_path)
    by_stage = {j["stage"]: j for j in result["jobs"]}
    assert (by_stage["data"]["before_first_log_s"], by_stage["data"]["after_last_log_s"]) == (2.5, 2.0)
    assert "before_first_log_s" not in by_stage["train_t1_ce_s0"]
    assert "before_first_log_s" not in by_stage["train_sweep_p0_q0_s1"]   # no log of it
    assert result["outside_job_logs"] == {"jobs": 1, "seconds": 4.5, "share": pytest.approx(4.5 / 217)}
