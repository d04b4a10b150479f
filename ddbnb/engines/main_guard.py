"""Refuse a local run started from a script's top level, which each worker process would run again.

The local engine's workers are spawned or forked from a fork server, and
multiprocessing then imports the main module in each of them, as ``spawn``
does. A script that calls ddbnb outside ``if __name__ == "__main__":`` would run
that call again in every worker: each dies at start, and every segment fails
with a crash that does not say why. This check names the line instead, before
anything runs.
"""

from __future__ import annotations

import ast
import os
import sys
import tokenize
from types import FrameType, ModuleType
from typing import TypeGuard

from ddbnb.exceptions import UnguardedMainError


def check_main_guarded() -> None:
    """Raise UnguardedMainError when the main script calls ddbnb outside ``if __name__ == "__main__":``.

    Only what multiprocessing imports again is checked: a main module run from a
    file (``python script.py``, a console script, or ``python -m module``). A
    notebook, ``python -c`` and a package's ``__main__`` are not imported again,
    and a script that cannot be read or parsed is let through.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not _imported_again(main, str(path)):
        return
    frame = _outermost_frame(main)
    if frame is None:
        return
    try:
        with tokenize.open(path) as source:  # in the encoding the script declares
            tree = ast.parse(source.read(), str(path))
    except (OSError, SyntaxError, ValueError):  # UnicodeDecodeError is a ValueError
        return
    if not _guarded(tree.body, frame.f_lineno):
        raise UnguardedMainError(str(path), frame.f_lineno)


def _guarded(statements: list[ast.stmt], line: int) -> bool:
    """Whether ``line`` lies in the body of a main guard among ``statements``, at any depth (a guard inside
    a top-level ``try`` or ``with`` counts; the ``else`` of a guard does not)."""
    for statement in statements:
        if not _holds(statement, line):
            continue
        if _is_main_guard(statement) and any(_holds(inner, line) for inner in statement.body):
            return True
        blocks = [getattr(statement, name, None) or [] for name in ("body", "orelse", "finalbody")]
        blocks += [handler.body for handler in getattr(statement, "handlers", None) or []]
        return any(_guarded(block, line) for block in blocks if isinstance(block, list))
    return False


def _holds(statement: ast.stmt, line: int) -> bool:
    """Whether ``statement`` spans ``line``."""
    return statement.lineno <= line <= (statement.end_lineno or statement.lineno)


def _imported_again(main: ModuleType, path: str) -> bool:
    """Whether multiprocessing imports this main module in each worker (as its ``spawn.prepare`` decides)."""
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name != "__main__" and not name.endswith(".__main__")
    return os.path.splitext(os.path.basename(path))[0] != "ipython"


def _outermost_frame(main: ModuleType) -> FrameType | None:
    """The main module's own top-level frame on this call's stack, if the call came from it."""
    found = None
    frame: FrameType | None = sys._getframe(1)
    namespace = vars(main)
    while frame is not None:
        if frame.f_globals is namespace and frame.f_code.co_name == "<module>":
            found = frame
        frame = frame.f_back
    return found


def _is_main_guard(statement: ast.stmt) -> TypeGuard[ast.If]:
    """Whether ``statement`` is an ``if`` whose test asks ``__name__ == "__main__"``."""
    if not isinstance(statement, ast.If):
        return False
    for node in ast.walk(statement.test):
        if isinstance(node, ast.Compare) and all(isinstance(op, ast.Eq) for op in node.ops):
            parts = [node.left, *node.comparators]
            names = any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts)
            mains = any(isinstance(p, ast.Constant) and p.value == "__main__" for p in parts)
            if names and mains:
                return True
    return False
