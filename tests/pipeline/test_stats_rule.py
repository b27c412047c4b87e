"""`snakemake stats` on the default params: data + stats from nothing, then nothing to do."""
from __future__ import annotations

import json
import sys
import time

import pytest

from tests.conftest import run

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]


def test_stats_rule_runs_once_then_is_up_to_date(pipeline_copy):
    smk = [sys.executable, "-m", "snakemake", "--cores", "2"]
    start = time.monotonic()
    run(smk + ["stats"], pipeline_copy, timeout=300)
    elapsed = time.monotonic() - start
    assert elapsed < 120, f"data + stats took {elapsed:.0f} s"

    stats = json.loads((pipeline_copy / "results/stats/class_freq.json").read_text())
    assert all(stats["groups"][g] >= 5 for g in "rcf"), stats["groups"]
    assert stats["frequency_mismatches"] == []
    for name in ("class_frequency.png", "class_frequency.svg"):
        assert (pipeline_copy / "reports/figures" / name).stat().st_size > 1000
    assert (pipeline_copy / "logs/stats/stats.log").read_text().count("rare") == 1

    again = run(smk + ["stats"], pipeline_copy, timeout=120)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_bad_params_fail_before_any_job(pipeline_copy):
    path = pipeline_copy / "params/pipeline.yaml"
    path.write_text(path.read_text().replace("num_classes: 40", "num_classes: forty"))
    proc = run([sys.executable, "-m", "snakemake", "--cores", "1", "all"], pipeline_copy, check=False)
    assert proc.returncode != 0
    assert "synthetic.num_classes" in proc.stdout + proc.stderr
    assert not (pipeline_copy / "data").exists()
