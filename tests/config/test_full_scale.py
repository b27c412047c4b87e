"""`full` without a GPU: every row at the paper's settings builds, takes a CPU step and predicts.

Each row runs ``python -m seesaw_lvis bench full-scale --row R`` in its own process (peak RSS
is that row's): LVIS v1's 1203 categories, ResNet-50 / ResNeSt-200 + DCNv2, FPG with 9
stacks, the five TTA scales with flip; the ImageNet weights replaced by a local stand-in
(nothing is downloaded). See ``seesaw_lvis.bench.full_scale``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

ROWS = ["t1_ce", "t1_eql", "t1_seesaw", "t2_mask_rcnn", "t2_syncbn", "t2_carafe", "t2_htc_lite", "t2_tsd",
        "t2_mask_scoring", "t2_train_aug", "t2_fpg", "t2_resnest", "t2_seesaw", "t2_finetune", "t2_tta"]
PEAK_RSS_LIMIT_MB = 20 * 1024   # the bound; the machine has 24 GB


def test_every_row_is_stepped(default_params):
    assert ROWS == list(default_params["rows"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("row_id", ROWS)
def test_row_at_full_takes_a_cpu_step_and_predicts(row_id, tmp_path, default_params):
    out = tmp_path / f"{row_id}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "seesaw_lvis", "bench", "full-scale", "--params", str(REPO / "params/pipeline.yaml"),
         "--row", row_id, "--work", str(tmp_path / "work"), "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=1700)
    assert proc.returncode == 0, proc.stderr[-6000:]
    r = json.loads(out.read_text())
    kind = default_params["rows"][row_id]["kind"]
    assert r["params"] > 40e6  # ResNet-50 Mask R-CNN with 1203 classes has ~50 M
    if kind in ("train", "finetune"):
        assert r["losses_finite"] and r["grads_finite"], r
        assert r["optimizer_moved_weights"], r
        assert r["params_without_grad"] == [], r   # every trainable parameter is reached by the loss
        if kind == "finetune":  # only the new classification branches train
            assert r["trainable_modules"] == ["roi_head.ft_cls_branches"], r
            assert 0 < r["trainable_params"] < r["params"] / 5, r
        else:
            assert r["trainable_params"] > r["params"] / 2, r
    else:
        assert r["tta_views"] == 10  # the paper's 5 scales x 2 flips
    for pred, (h, w) in zip(r["predictions"], [(320, 320), (256, 320)]):
        assert {"bboxes", "scores", "labels", "masks"} <= set(pred["keys"]), pred
        assert pred["dets"] > 0 and pred["mask_shape"] == [h, w], pred
    if ROWS.index(row_id) >= ROWS.index("t2_mask_scoring"):  # the MaskIoU head, from that row on
        assert all("mask_scores" in p["keys"] for p in r["predictions"])
    assert r["peak_rss_mb"] < PEAK_RSS_LIMIT_MB, r
