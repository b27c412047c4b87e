"""The pretraining stage: a balanced set, weights every row of a family loads, resume, and the
full scale's fetch of the paper's ImageNet weights (from a local server)."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch

from seesaw_lvis.data.synthetic import ATTRIBUTES, classification_set
from seesaw_lvis.engine import pretrain
from seesaw_lvis.params import pretrain_path
from tests.unit.test_download import _no_proxy, _serve, server  # noqa: F401  (fixtures)


def test_classification_set_is_balanced_deterministic_and_its_own_draw():
    images, labels = classification_set(600, 32, seed=5)
    again, labels_again = classification_set(600, 32, seed=5)
    assert images.shape == (600, 32, 32, 3) and images.dtype == np.uint8 and labels.shape == (600, 3)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    other, _ = classification_set(600, 32, seed=6)
    assert not np.array_equal(images, other)
    for k, values in enumerate(ATTRIBUTES.values()):  # every value, each near 1/len(values) of the set
        counts = np.bincount(labels[:, k], minlength=len(values))
        assert counts.min() > 0.5 * 600 / len(values) and counts.max() < 1.5 * 600 / len(values)


@pytest.mark.parametrize("row_id", ["t1_ce", "t2_syncbn", "t2_resnest", "t2_seesaw"])
def test_rows_load_their_familys_pretrained_backbone(ci_params, row_id):
    """mmdet's init_cfg=Pretrained loads the stage's backbone.pth into the row's backbone:
    every backbone weight equals the file's."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import seesaw_lvis.models  # noqa: F401
    from seesaw_lvis.configs import resolve

    cfg = resolve.load(ci_params, row_id)
    family = resolve.backbone_family(cfg)
    saved = torch.load(pretrain_path(ci_params, family), map_location="cpu", weights_only=True)
    assert saved["meta"]["family"] == family and set(saved["meta"]["held_out_accuracy"]) == set(ATTRIBUTES)
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.backbone.state_dict()
    # every weight but the DCNv2 offset branches (zero at start, as from the paper's ImageNet files)
    assert {k for k in state if "conv_offset" not in k} == set(saved["state_dict"])
    for k, v in saved["state_dict"].items():
        assert torch.equal(state[k], v), (row_id, k)


def _ci_run(params, out, monkeypatch=None, fail_at=None):
    if fail_at is not None:
        calls = {"n": 0}
        logits = pretrain._logits

        def failing(*a, **k):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise KeyboardInterrupt("killed")
            return logits(*a, **k)

        monkeypatch.setattr(pretrain, "_logits", failing)
    return pretrain.train_backbone(params, "resnet", out)


def test_an_interrupted_pretraining_resumes_to_the_same_weights(ci_params, tmp_path, monkeypatch):
    params = copy.deepcopy(ci_params)
    params["pretrain"]["ci"]["resnet"] = {**params["pretrain"]["ci"]["resnet"], "iters": 5}
    torch.set_num_threads(1)
    straight = torch.load(_ci_run(params, tmp_path / "straight"), map_location="cpu", weights_only=True)
    with pytest.raises(KeyboardInterrupt):
        _ci_run(params, tmp_path / "killed", monkeypatch, fail_at=4)  # during iteration 4
    assert (tmp_path / "killed/work/last.pth").is_file() and not (tmp_path / "killed/backbone.pth").exists()
    monkeypatch.undo()
    resumed = torch.load(_ci_run(params, tmp_path / "killed"), map_location="cpu", weights_only=True)
    assert not (tmp_path / "killed/work/last.pth").exists()
    for k, v in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][k], v), k


def test_full_fetches_the_papers_weights_with_their_published_checksum(default_params, server, tmp_path):  # noqa: F811
    payload = b"imagenet weights" * 1000
    digest = hashlib.sha256(payload).hexdigest()
    params = copy.deepcopy(default_params)
    params["scale"] = "full"
    params["pretrain"]["full"]["resnet"] = {"config_name": "torchvision://resnet50",
                                           "url": _serve(server, f"/resnet50-{digest[:8]}.pth", payload),
                                           "checksum": f"sha256:{digest[:8]}"}
    out = pretrain.run(params, "resnet", tmp_path / "resnet", progress=False)
    assert out == tmp_path / "resnet/backbone.pth" and out.read_bytes() == payload
    params["pretrain"]["full"]["resnet"]["checksum"] = "sha256:00000000"
    from seesaw_lvis.data.download import ChecksumError

    with pytest.raises(ChecksumError):
        pretrain.run(params, "resnet", tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad/backbone.pth").exists()
