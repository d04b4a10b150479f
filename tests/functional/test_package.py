"""The Lambda package: deterministic, self-contained, and runnable with only the standard library and boto3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest

from ddbnb.control.package import build_lambda_package
from ddbnb.exceptions import TransformLoadError
from tests.conftest import ROOT, scan_all, simple_item, spec

BLOCKED = ["pandas", "matplotlib", "tqdm", "papermill", "IPython", "ipykernel", "jupyter", "nbformat", "numpy"]


def test_the_build_is_deterministic_and_keyed_by_content(tmp_path):
    first, second = build_lambda_package(spec("bump")), build_lambda_package(spec("bump"))
    assert first.data == second.data and first.key == second.key
    changed = tmp_path / "transforms.py"
    changed.write_text((ROOT / "tests/fixtures/transforms.py").read_text() + "\n# changed\n")
    assert build_lambda_package(f"{changed}:bump").key != first.key
    names = zipfile.ZipFile(__import__("io").BytesIO(first.data)).namelist()
    assert names == sorted(names)
    assert "handler.py" in names and "ddbnb/worker/segment.py" in names and "transforms/transforms.py" in names
    worker = {f"ddbnb/{p.relative_to(ROOT / 'ddbnb').as_posix()}" for p in (ROOT / "ddbnb/worker").rglob("*.py")}
    assert {n for n in names if n.startswith("ddbnb/")} == {"ddbnb/__init__.py", "ddbnb/exceptions.py", *worker}


def test_a_module_transform_is_packaged_with_its_package():
    package = build_lambda_package("transforms.demo:upgrade_order")
    names = zipfile.ZipFile(__import__("io").BytesIO(package.data)).namelist()
    assert {"transforms/__init__.py", "transforms/demo.py"} <= set(names)
    assert package.transform == "transforms.demo:upgrade_order"


def test_a_transform_outside_lambda_must_be_named_by_path():
    with pytest.raises(TransformLoadError, match="file path"):
        build_lambda_package("tests.fixtures.transforms:bump")


def test_the_unpacked_handler_migrates_a_segment_without_pandas_or_jupyter(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i, pad=100) for i in range(120)])
    package = build_lambda_package(spec("bump"))
    zipfile.ZipFile(__import__("io").BytesIO(package.data)).extractall(tmp_path / "task")
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys, time
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("not in the Lambda runtime: " + name)
        sys.meta_path.insert(0, Block())
        import ddbnb, handler
        assert ddbnb.__file__.startswith({str(tmp_path)!r}), ddbnb.__file__
        class Context:
            def get_remaining_time_in_millis(self):
                return 60_000
        event = {{"table": {table!r}, "segment": 0, "total_segments": 1, "transform": {package.transform!r},
                 "write_mode": "batch", "rate_limit": 0}}
        print(json.dumps(handler.handler(event, Context())))
    """)
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path / "task",
        env={**os.environ, "PYTHONPATH": f"{tmp_path / 'task'}{os.pathsep}{site}"},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["scanned"], result["written"], result["cursor"]) == (120, 120, None)
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}


def test_a_file_transform_ships_with_its_folder_and_imports_the_modules_beside_it(tmp_path):
    from ddbnb.control.package import check_package_imports
    from ddbnb.worker.transforms import load_transform, transform_digest

    folder = tmp_path / "mine"
    (folder / "vendored").mkdir(parents=True)
    (folder / "vendored" / "__init__.py").write_text("FACTOR = 3\n")
    (folder / "vendored" / "table.csv").write_text("a,b\n")  # a vendored package's data ships too
    (folder / "helpers.py").write_text("def triple(n):\n    from vendored import FACTOR\n    return n * FACTOR\n")
    (folder / "notes.txt").write_text("not code: stays out\n")
    (folder / ".venv").mkdir()
    (folder / ".venv" / "junk.py").write_text("")
    (folder / "move.py").write_text(
        "import helpers\n\ndef fn(item):\n"
        "    item['n'] = {'N': str(helpers.triple(int(item['n']['N'])))}\n    return item\n"
    )
    spec_ = f"{folder / 'move.py'}:fn"
    assert load_transform(spec_)({"n": {"N": "2"}})["n"] == {"N": "6"}  # the sibling import works locally
    package = build_lambda_package(spec_)
    names = set(zipfile.ZipFile(__import__("io").BytesIO(package.data)).namelist())
    assert {"transforms/move.py", "transforms/helpers.py", "transforms/vendored/__init__.py"} <= names
    assert "transforms/vendored/table.csv" in names and "transforms/notes.txt" not in names
    assert not [n for n in names if ".venv" in n]
    check_package_imports(package, spec_)  # imports from the package alone
    before = transform_digest(spec_)
    (folder / "helpers.py").write_text("def triple(n):\n    return n * 4\n")
    assert transform_digest(spec_) != before  # a dry run of the old helper no longer matches


def test_a_module_the_package_lacks_fails_at_deploy_with_its_name(tmp_path):
    from ddbnb.control.package import check_package_imports
    from ddbnb.exceptions import PackageImportError

    folder = tmp_path / "uses_pandas"
    folder.mkdir()
    # pandas is installed here, so the transform loads locally; the Lambda runtime has no pandas.
    (folder / "fn.py").write_text("import pandas\n\ndef fn(item):\n    return item\n")
    spec_ = f"{folder / 'fn.py'}:fn"
    package = build_lambda_package(spec_)
    with pytest.raises(PackageImportError) as info:
        check_package_imports(package, spec_)
    assert info.value.missing == "pandas"
    assert "transform's folder" in str(info.value) and "pip install --target" in str(info.value)
    (folder / "fn.py").write_text("import no_such_helper\n\ndef fn(item):\n    return item\n")
    with pytest.raises(TransformLoadError, match="no_such_helper"):  # missing locally too: named before packaging
        build_lambda_package(spec_)


def test_a_transform_in_a_folder_too_big_to_ship_still_runs_locally_and_is_refused_only_for_packaging(
    tmp_path, monkeypatch
):
    from ddbnb.worker import transforms

    monkeypatch.setattr(transforms, "MAX_FOLDER_FILES", 3)  # as if it sat in a home folder
    for i in range(5):
        (tmp_path / f"other_{i}.py").write_text("")
    (tmp_path / "mine.py").write_text("def fn(item):\n    return item\n")
    spec_ = f"{tmp_path / 'mine.py'}:fn"
    digest = transforms.transform_digest(spec_)  # the dry run and 03's check: the file alone
    assert digest == transforms._file_digest(spec_)
    with pytest.raises(TransformLoadError, match="in a folder of its own"):
        build_lambda_package(spec_)
