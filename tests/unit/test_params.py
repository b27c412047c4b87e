"""params/pipeline.yaml: the schema accepts the shipped file and names every bad key."""
from __future__ import annotations

import copy

import pytest
import yaml

from seesaw_lvis.params import ParamsError, check_no_overrides, load, validate


def test_shipped_params_are_valid(default_params):
    assert default_params["dataset"] in ("synthetic", "lvis_v1")


def test_every_key_is_commented(repo_root):
    """Each key of the params file has a comment on its line or on the line just above."""
    lines = (repo_root / "params/pipeline.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        body = line.split("#")[0].strip().removeprefix("- ")
        if not body or ":" not in body:
            continue
        above = lines[i - 1].strip() if i else ""
        assert "#" in line or above.startswith("#"), f"params/pipeline.yaml line {i + 1}: {line!r} has no comment"


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update(datset="synthetic"), "unknown key 'datset'"),
    (lambda p: p["synthetic"].update(num_clases=3), "unknown key 'synthetic.num_clases'"),
    (lambda p: p["synthetic"].update(num_classes="40"), "key 'synthetic.num_classes': '40' is not of type 'integer'"),
    (lambda p: p.update(scale="huge"), "key 'scale': 'huge' is not one of"),
    (lambda p: p["stats"].update(rfs_threshold=0), "key 'stats.rfs_threshold'"),
    (lambda p: p["lvis_v1"]["files"][0].update(checksum="crc:12"), "key 'lvis_v1.files.0.checksum'"),
    (lambda p: p.pop("seed"), "'seed' is a required property"),
    (lambda p: p["scales"]["mini"].update(lr={"table2": -0.1}), "key 'scales.mini.lr'"),
    (lambda p: p["scales"]["mini"].update(lr={"tabel2": 0.01}), "key 'scales.mini.lr'"),
    (lambda p: p["scales"]["mini"].update(lr={"table1": 0.01}), "key 'scales.mini.lr'"),
])
def test_bad_params_name_the_key(default_params, mutate, message):
    params = copy.deepcopy(default_params)
    mutate(params)
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate(params, source="params/pipeline.yaml")


def test_rows_follow_the_paper(default_params):
    from seesaw_lvis.params import rows

    assert list(rows(default_params, table=1)) == ["t1_ce", "t1_eql", "t1_seesaw"]
    t2 = rows(default_params, table=2)
    assert len(t2) == 12
    assert [r["paper"]["mask_AP"] for r in t2.values()][-1] == 38.8  # Table 2's last row
    for row in default_params["rows"].values():
        assert row["from"] is None or row["from"] in default_params["rows"]


def test_rows_file_must_not_redefine_pipeline_keys(tmp_path, repo_root):
    (tmp_path / "pipeline.yaml").write_text((repo_root / "params/pipeline.yaml").read_text())
    (tmp_path / "rows.yaml").write_text("rows: {}\nseed: 1\n")
    (tmp_path / "scales.yaml").write_text((repo_root / "params/scales.yaml").read_text())
    with pytest.raises(ParamsError, match="rows.yaml: key\\(s\\) seed also set"):
        load(tmp_path / "pipeline.yaml")


def test_load_names_the_file(tmp_path):
    with pytest.raises(ParamsError, match="missing.yaml: params file not found"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load(bad)


def test_snakemake_config_overrides_are_refused(repo_root, default_params, tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in default_params.items() if k not in ("rows", "scales")}))
    (tmp_path / "rows.yaml").write_text(yaml.safe_dump({"rows": default_params["rows"]}))
    (tmp_path / "scales.yaml").write_text(yaml.safe_dump({"scales": default_params["scales"]}))
    check_no_overrides(default_params, path)  # identical: fine
    changed = copy.deepcopy(default_params)
    changed["scale"] = "ci" if default_params["scale"] != "ci" else "mini"
    with pytest.raises(ParamsError, match="differs from the file in key\\(s\\) scale"):
        check_no_overrides(changed, path)
