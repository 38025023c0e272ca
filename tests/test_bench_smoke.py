"""The benchmark must keep running: a tiny seed and short loops, no figures asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_runs(tmp_path):
    output = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rows", "2000", "--quick", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "crmcore benchmark: sqlite" in proc.stdout
    assert "| figure" in proc.stdout and "(b) HTTP GET contact by id" in proc.stdout
    document = json.loads(output.read_text())
    keys = {f["key"] for f in document["backends"]["sqlite"]["figures"]}
    assert {"a_bulk_create", "b_http_get", "c_list_indexed", "d_search"} <= keys


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_import_bench_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "import_bench.py"), "--rows", "3000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "3000 created" in proc.stdout and "crmcore/baseline = " in proc.stdout
