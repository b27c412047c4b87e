"""``bench ops``: our CPU RoIAlign / DCNv2 against mmcv's CPU kernels, on the same inputs."""
from __future__ import annotations

import json

from seesaw_lvis.bench import ops


def test_bench_ops_times_both_kernels_on_agreeing_outputs(tmp_path):
    out = tmp_path / "bench" / "ops.json"
    res = ops.run(out, repeats=2, warmup=1, only=("train_box_stride8", "eval_mask_stride4",
                                                  "train_resnest50_stage2"))
    assert json.loads(out.read_text()) == res
    assert set(res["cases"]) == {"roi_align/train_box_stride8", "roi_align/eval_mask_stride4",
                                 "dcnv2/train_resnest50_stage2"}
    for name, case in res["cases"].items():
        assert set(case["median_ms"]) == {"mmcv", "ours"}
        assert all(v > 0 for v in case["median_ms"].values())
        ratio = case["median_ms"]["mmcv"] / case["median_ms"]["ours"]
        assert abs(case["ratio_mmcv_over_ours"] - ratio) < 1e-3 * ratio
        # the two kernels compute the same op: outputs (and input gradients when trained) agree
        assert case["agreement"]["max_abs_diff_out"] < 1e-4, name
        assert ("max_abs_diff_input_grad" in case["agreement"]) == name.split("/")[1].startswith("train")
        assert case["agreement"].get("max_abs_diff_input_grad", 0.0) < 1e-4, name


def test_every_case_is_named_once():
    assert len(ops.CASES) == len(set(ops.CASES)) == len(ops.ROI_CASES) + len(ops.DCN_CASES)
