"""seesaw_lvis.workflow.remote without a pipeline: params into DVC's local config (and a clear
error for an option the remote's kind lacks), the upstream closure of a partial pull, and the
dependency-ordered times that keep Snakemake from re-running pulled stages. The push / pull
round trips (a directory remote and an S3-compatible server) are in tests/pipeline."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from seesaw_lvis.workflow import remote
from seesaw_lvis.workflow.stages import Stage


def _settings(**kw):
    return {"dvc": {"remote": None, "remote_options": {}, "cache_dir": None, "cache_shared": None,
                    "cache_type": None, **kw}}


@pytest.fixture
def dvc_repo(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def test_configure_writes_and_clears_the_local_config(dvc_repo):
    local = dvc_repo / ".dvc" / "config.local"
    url = remote.configure(_settings(remote="s3://bucket/lvis", remote_options={"endpointurl": "http://127.0.0.1:9"},
                                     cache_dir="/shared/cache", cache_shared="group",
                                     cache_type=["reflink", "hardlink", "symlink"]), dvc_repo)
    assert url == "s3://bucket/lvis"
    text = local.read_text()
    for line in ("remote = seesaw", "url = s3://bucket/lvis", "endpointurl = http://127.0.0.1:9",
                 "dir = /shared/cache", "shared = group", 'type = "reflink,hardlink,symlink"'):
        assert line in text, (line, text)
    assert remote.configure(_settings(), dvc_repo) is None
    assert "seesaw" not in local.read_text() and "shared" not in local.read_text()
    assert "seesaw" not in (dvc_repo / ".dvc" / "config").read_text()   # the committed config is untouched


def test_an_option_the_remote_lacks_names_it(dvc_repo):
    with pytest.raises(remote.RemoteError, match="endpointurl"):
        remote.configure(_settings(remote=str(dvc_repo / "r"), remote_options={"endpointurl": "http://x"}), dvc_repo)


def test_push_without_a_remote_says_which_param(dvc_repo):
    with pytest.raises(remote.RemoteError, match="params dvc.remote is not set"):
        remote.push(_settings(), root=dvc_repo)


def _stages():
    return [Stage("data", "", ["src/a.py"], ["data/d"], [], ""),
            Stage("stats", "", ["data/d"], ["results/s.json"], [], ""),
            Stage("train_a", "", ["results/s.json"], ["results/a.pth"], [], "", metrics=["results/a.json"]),
            Stage("train_b", "", ["results/s.json"], ["results/b.pth"], [], ""),
            Stage("eval_a", "", ["results/a.pth"], ["results/ea.json"], [], "")]


def test_closure_is_the_stage_and_its_upstream():
    assert remote._closure(_stages(), ["eval_a"]) == {"data", "stats", "train_a", "eval_a"}
    with pytest.raises(remote.RemoteError, match="no such stage: nope"):
        remote._closure(_stages(), ["nope"])


def test_times_follow_the_dependency_order(tmp_path):
    stage_list = _stages()
    (tmp_path / "data" / "d" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "d" / "sub" / "x.json").write_text("{}")
    (tmp_path / "results").mkdir()
    for name in ("s.json", "a.pth", "a.json", "b.pth", "ea.json"):
        (tmp_path / "results" / name).write_text(name)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("# a clone's source file, written just now")
    # a pull writes in its own order: make the first stage's output the newest
    os.utime(tmp_path / "data" / "d" / "sub" / "x.json", (4e9, 4e9))
    os.symlink(tmp_path / "results" / "b.pth", tmp_path / "results" / "b_link")
    stage_list[3].outs.append("results/b_link")
    remote.order_mtimes(stage_list, tmp_path)

    def newest(out):
        p = tmp_path / out
        paths = [*p.rglob("*"), p] if p.is_dir() else [p]
        return max(q.lstat().st_mtime for q in paths)

    def oldest(out):
        p = tmp_path / out
        paths = [*p.rglob("*"), p] if p.is_dir() else [p]
        return min(q.lstat().st_mtime for q in paths)

    assert oldest("data/d") > (tmp_path / "src" / "a.py").stat().st_mtime
    for i, stage in enumerate(stage_list):
        for earlier in stage_list[:i]:
            assert min(map(oldest, stage.all_outs)) > max(map(newest, earlier.all_outs)), (stage.name, earlier.name)
