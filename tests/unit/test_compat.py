"""The stack incompatibilities and slow paths fixed in seesaw_lvis.compat, proven on the real libraries."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from seesaw_lvis import compat


def make_runner(work_dir, max_iters, resume=False, load_from=None):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, inputs, labels=None, mode="tensor"):
            inputs = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
            out = self.linear(inputs)
            if mode == "loss":
                return {"loss": ((out.squeeze(-1) - torch.stack(labels)) ** 2).mean()}
            return out

    data = [dict(inputs=torch.tensor([float(i), 1.0]), labels=torch.tensor(float(i % 3))) for i in range(16)]
    loader = DataLoader(data, batch_size=4, shuffle=False, collate_fn=lambda b: {
        "inputs": [x["inputs"] for x in b], "labels": [x["labels"] for x in b]})
    torch.manual_seed(0)  # same initial weights in every runner
    return Runner(
        model=Toy(), work_dir=str(work_dir), train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9)),
        param_scheduler=dict(type="MultiStepLR", milestones=[3], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False),
                           logger=dict(type="LoggerHook", interval=1)),
        randomness=dict(seed=0), resume=resume, load_from=load_from, default_scope="mmengine")


def test_torch_loads_weights_only_by_default():
    import inspect

    # The premise of the fix: if torch ever changes this default, revisit compat.py.
    assert inspect.signature(torch.load).parameters["weights_only"].default is None
    assert torch.serialization._default_to_weights_only(None) is True


def test_checkpoint_save_resume_round_trip_weights_only(tmp_path):
    compat.install()
    runner = make_runner(tmp_path / "a", max_iters=4)
    runner.train()
    ckpt = tmp_path / "a" / "iter_4.pth"
    assert ckpt.is_file()

    # Everything non-tensor in mmengine's checkpoint is on our allow-list, nothing more needed.
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in compat.checkpoint_safe_globals()}
    allowed.add("builtins.getattr")  # bound to compat.history_buffer_method
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()  # ask torch what a bare weights_only load lacks
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)))
    finally:
        torch.serialization.add_safe_globals(saved)
    assert needed, "an mmengine checkpoint should need non-tensor globals"
    assert needed <= allowed, needed - allowed

    loaded = torch.load(ckpt)  # weights_only=True, the default
    assert loaded["meta"]["iter"] == 4 and "message_hub" in loaded

    resumed = make_runner(tmp_path / "a", max_iters=6, resume=True)
    resumed.train()
    assert resumed.iter == 6
    straight = make_runner(tmp_path / "b", max_iters=6)
    straight.train()
    for (k, v), (_, w) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k


def test_checkpoint_getattr_is_restricted_to_history_buffer_statistics():
    from mmengine.logging.history_buffer import HistoryBuffer

    assert compat.history_buffer_method(HistoryBuffer, "mean") is HistoryBuffer.mean
    for owner, name in ((HistoryBuffer, "__init__"), (HistoryBuffer, "__dict__"), (compat, "np")):
        with pytest.raises(RuntimeError, match="refused"):
            compat.history_buffer_method(owner, name)


def test_without_the_fix_mmengine_cannot_load_its_checkpoint(tmp_path):
    compat.install()
    make_runner(tmp_path / "a", max_iters=2).train()
    code = textwrap.dedent(f"""
        from mmengine.runner.checkpoint import _load_checkpoint
        try:
            _load_checkpoint({str(tmp_path / 'a' / 'iter_2.pth')!r})
        except Exception as e:
            print("FAILED", type(e).__name__, str(e)[:200])
        else:
            print("LOADED")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "FAILED" in out and "weights" in out.lower(), out


def test_lvis_eval_runs_and_scores_ground_truth_perfectly(small_dataset, tmp_path):
    compat.install()
    from lvis import LVIS, LVISEval, LVISResults

    gt_path = small_dataset / "annotations/lvis_v1_val.json"
    gt = LVIS(str(gt_path))
    dets = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0)
            for a in json.loads(gt_path.read_text())["annotations"]]
    ev = LVISEval(gt, LVISResults(gt, dets), iou_type="bbox")
    ev.run()
    assert ev.results["AP"] == pytest.approx(1.0)


def test_lvis_needs_the_numpy_alias():
    """lvis 0.5.3 really does use np.float, and our alias is the builtin float."""
    import inspect

    import lvis.eval

    assert "np.float" in inspect.getsource(lvis.eval)
    compat.install()
    import numpy as np

    assert np.float is float


def test_instaboost_handles_masks_with_several_contours():
    """instaboostfast 0.1.2 + numpy >= 1.24 crash on a mask with contours of unequal length."""
    import importlib

    import numpy as np
    import instaboostfast.affine_transform as affine
    import instaboostfast.pycococreater as creator

    mask = np.zeros((20, 20), np.uint8)
    mask[2:5, 2:5] = 1
    mask[9:18, 8:18] = 1
    original = importlib.reload(creator).binary_mask_to_polygon
    with pytest.raises(ValueError, match="inhomogeneous"):
        original(mask)
    compat.fix_instaboost_ragged_contours()
    polygons = affine.binary_mask_to_polygon(mask)
    assert creator.binary_mask_to_polygon is affine.binary_mask_to_polygon
    assert len(polygons) == 2 and all(len(p) >= 6 for p in polygons)
    # a single contour gives what the original gives
    single = np.zeros((20, 20), np.uint8)
    single[3:12, 4:15] = 1
    assert polygons and affine.binary_mask_to_polygon(single) == original(single)


def test_config_text_is_formatted_once_and_identical():
    """mmengine formats cfg.pretty_text with yapf on every checkpoint; the memoised formatter
    returns the same text, computes a repeated one once, and still sees any change."""
    import mmengine.config.config as config_module
    from mmengine.config import Config

    compat.install()
    cfg = Config(dict(model=dict(type="Toy", widths=[1, 2, 3], name="a" * 90), seed=0))
    original = config_module.FormatCode.original
    text = cfg.pretty_text
    config_module.FormatCode = original
    try:
        assert cfg.pretty_text == text  # yapf itself, unmemoised
    finally:
        compat.memoise_config_formatting()
    calls = []
    config_module.FormatCode = compat._memoised_format_code(
        lambda t, **kw: (calls.append(t), original(t, **kw))[1])
    try:
        assert cfg.pretty_text == cfg.pretty_text == text
        assert len(calls) == 1
        cfg.seed = 1
        assert "seed = 1" in cfg.pretty_text and len(calls) == 2
    finally:
        config_module.FormatCode = original
        compat.memoise_config_formatting()
