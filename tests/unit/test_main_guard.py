"""The main-script check: which shapes of a script's call would run again in each local worker process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

HEAD = "from ddbnb.engines.main_guard import check_main_guarded as check\n"

#: A script's body (after HEAD, line 1) and the line the check names, or None where it lets the call through.
SHAPES: dict[str, tuple[str, int | None]] = {
    "a call at the top level": ("check()\n", 2),
    "a call under the guard": ('if __name__ == "__main__":\n    check()\n', None),
    "the guard the other way round, with more": ("if '__main__' == __name__ and True:\n    check()\n", None),
    "the else of a guard with more": ('if __name__ == "__main__" and not check:\n    pass\nelse:\n    check()\n', 5),
    "a main() called at the top level": ("def main():\n    check()\n\n\nmain()\n", 6),
    "a main() called under the guard": ('def main():\n    check()\n\n\nif __name__ == "__main__":\n    main()\n', None),
    "a guard inside a top-level try": (
        'try:\n    if __name__ == "__main__":\n        check()\nfinally:\n    pass\n',
        None,
    ),
    "a top-level with, no guard": ("import contextlib\nwith contextlib.nullcontext():\n    check()\n", 4),
}


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_script_is_refused_where_its_call_would_run_again_in_each_worker(shape, tmp_path):
    body, line = SHAPES[shape]
    script = tmp_path / "script.py"
    script.write_text(HEAD + body + "print('let through')\n")
    done = run(tmp_path, str(script))
    if line is None:
        assert done.returncode == 0 and done.stdout.strip() == "let through", done.stderr
    else:
        assert done.returncode == 1 and "let through" not in done.stdout
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"ddbnb.exceptions.UnguardedMainError: {script}, line {line}, starts a local run")
        assert 'Put the call under `if __name__ == "__main__":`' in last


def test_a_module_run_with_dash_m_is_checked_and_python_dash_c_is_not(tmp_path):
    (tmp_path / "job.py").write_text(HEAD + "check()\nprint('let through')\n")
    as_module = run(tmp_path, "-m", "job")
    assert as_module.returncode == 1 and f"{tmp_path / 'job.py'}, line 2" in as_module.stderr
    inline = run(tmp_path, "-c", HEAD + "check()\nprint('let through')\n")
    assert inline.returncode == 0 and inline.stdout.strip() == "let through", inline.stderr
