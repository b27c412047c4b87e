"""The suite never writes into the checkout's own outputs: conftest's session guard
(``user_outputs_untouched``) compares ``outputs_snapshot`` before and after. Here: the snapshot
sees every kind of change it must catch."""
from __future__ import annotations

import os

from tests.conftest import USER_OUTPUTS, outputs_snapshot


def test_outputs_snapshot_sees_created_changed_and_removed_files(tmp_path):
    assert {"mlflow.db", "mlruns", "results", "data", "reports"} <= set(USER_OUTPUTS)
    (tmp_path / "results" / "eval").mkdir(parents=True)
    (tmp_path / "results" / "eval" / "metrics.json").write_text("{}")
    (tmp_path / "mlflow.db").write_bytes(b"x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("")          # not an output: ignored
    base = outputs_snapshot(tmp_path)
    assert set(base) == {"results/eval/metrics.json", "mlflow.db"}

    (tmp_path / "src" / "code.py").write_text("changed")
    assert outputs_snapshot(tmp_path) == base
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "table.md").write_text("new")   # created
    assert set(outputs_snapshot(tmp_path)) - set(base) == {"reports/table.md"}
    st = os.stat(tmp_path / "mlflow.db")
    os.utime(tmp_path / "mlflow.db", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # rewritten in place
    assert outputs_snapshot(tmp_path)["mlflow.db"] != base["mlflow.db"]
    (tmp_path / "results" / "eval" / "metrics.json").unlink()                      # removed
    assert "results/eval/metrics.json" not in outputs_snapshot(tmp_path)
