"""The worker runs where pandas, matplotlib, tqdm, papermill and Jupyter cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import scan_all, simple_item, spec

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ["pandas", "matplotlib", "tqdm", "papermill", "IPython", "ipykernel", "nbformat", "numpy", "moto"]


def test_process_segment_runs_with_only_the_standard_library_and_boto3(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(50)])
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("blocked in the Lambda runtime: " + name)
        sys.meta_path.insert(0, Block())
        from ddbnb.segment import process_segment
        event = {{"table": {table!r}, "segment": 0, "total_segments": 1, "transform": {spec("bump")!r},
                 "write_mode": "batch", "rate_limit": 0}}
        print(json.dumps(process_segment(event)))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["scanned"], result["written"]) == (50, 50)
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}
