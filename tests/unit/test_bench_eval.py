"""seesaw_lvis.bench.eval: three evaluators (ours, lvis-api, faster-coco-eval), each in a child
process of its own, agree on a tiny size; a child that dies or times out is recorded, not raised."""
from __future__ import annotations

import copy
import json

import pytest

from seesaw_lvis.bench import eval as bench

# lvis-api 0.5.3 calls logger.warn when given a results list
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")

TINY = dict(sizes=[20], dets_per_image=30, num_cats=60)


def test_three_evaluators_agree(tmp_path):
    out = tmp_path / "eval.json"
    result = bench.run(out, timeout=300, **TINY)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    size = result["sizes"]["20"]
    assert size["num_detections"] == 20 * 30
    for t in ("bbox", "segm"):
        row = size[t]
        assert set(row) == {*bench.EVALUATORS, "time_ratio"}
        for name in bench.EVALUATORS:
            r = row[name]
            assert "error" not in r, (t, name, r)
            assert r["seconds"] > 0 and r["peak_rss_mb"] > 0
            assert 0 < r["AP"] < 1
            assert r["max_abs_diff"] <= 1e-6, (t, name)
        assert row["lvis_api"]["max_abs_diff"] == 0
        assert all(v > 0 for v in row["time_ratio"].values())


def test_child_timeout_recorded(tmp_path):
    result = bench.run(tmp_path / "eval.json", timeout=0.001, **TINY)
    size = result["sizes"]["20"]
    assert size["num_gt"] > 0  # the inputs have no timeout
    for t in ("bbox", "segm"):
        for name in bench.EVALUATORS:
            assert size[t][name] == {"error": "timeout after 0.001 s"}
        assert size[t]["time_ratio"] == {"ours/lvis_api": None, "ours/faster_coco_eval": None}


def test_killed_child_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert bench._in_child("ours", {}, tmp_path) == {"error": "killed by signal 9 (out of memory?)",
                                                     "returncode": -9}
    monkeypatch.setattr(bench, "_CHILD", "raise SystemExit('no such file')")
    assert bench._in_child("ours", {}, tmp_path) == {"error": "exit status 1: no such file", "returncode": 1}


def test_child_over_the_memory_cap_recorded(tmp_path, monkeypatch):
    """An evaluator that needs more memory than its cap fails with MemoryError, recorded with the
    cap, instead of taking the machine into the out-of-memory killer."""
    monkeypatch.setattr(bench, "_CHILD", "x = bytearray(3 * 2**30)")
    assert bench._in_child("ours", {}, tmp_path, max_memory_gb=1) == {
        "error": "exit status 1: MemoryError (address space capped at 1 GB)", "returncode": 1}


def test_no_lvis_api_result_no_diff():
    ok = {"result": {"AP": 0.5, "per_class": {}}, "seconds": 2.0, "peak_rss_mb": 10.0}
    row = bench._compare({"ours": ok, "lvis_api": {"error": "killed by signal 9 (out of memory?)", "returncode": -9},
                          "faster_coco_eval": {**ok, "seconds": 4.0}})
    assert row["ours"]["max_abs_diff"] is None and row["faster_coco_eval"]["max_abs_diff"] is None
    assert row["lvis_api"]["returncode"] == -9
    assert row["time_ratio"] == {"ours/lvis_api": None, "ours/faster_coco_eval": 0.5}


def test_faster_coco_eval_top_results_per_image(tmp_path):
    """Fewer kept results than given (max_dets=10 of 30 per image): still lvis-api's numbers."""
    gt = bench.make_gt(20, seed=1, num_cats=60)
    dets = bench.make_detections(gt, 30, seed=1)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    for t in ("bbox", "segm"):
        theirs = bench.lvis_api_metrics(gt_path, copy.deepcopy(dets), t, max_dets=10)
        fce = bench.faster_coco_eval_metrics(gt_path, copy.deepcopy(dets), t, max_dets=10)
        assert bench.max_abs_diff(fce, theirs) <= 1e-6
        assert fce["AP"] < bench.faster_coco_eval_metrics(gt_path, copy.deepcopy(dets), t)["AP"]


def test_cli_sizes_and_timeout(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(bench, "run", lambda *a, **k: seen.append((a, k)) or {})
    bench.main(["--out", str(tmp_path / "e.json")])
    bench.main(["--num-images", "20", "50", "--timeout", "5", "--max-memory-gb", "8"])
    assert list(seen[0][0][1]) == [1000, 19_809] and seen[0][0][4] == 3600.0 and seen[0][1]["max_memory_gb"] is None
    assert seen[1][0][1] == [20, 50] and seen[1][0][4] == 5.0 and seen[1][1]["max_memory_gb"] == 8.0
