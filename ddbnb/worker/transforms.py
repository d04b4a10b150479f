"""Load a user's transform from ``module:function`` or ``path/to/file.py:function``.

Only the standard library: this module ships inside the Lambda package.

A transform is loaded again whenever its source file changes (by content
hash), so an open kernel never previews or runs code older than the file on
disk, and :func:`transform_digest` names exactly the code a dry run saw.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddbnb.exceptions import TransformLoadError

Transform = Callable[[dict[str, Any]], "dict[str, Any] | None"]

#: The Lambda source root of a checkout: ``module:function`` specs resolve there too.
LAMBDA_ROOT = Path(__file__).resolve().parents[2] / "lambda"


def _split(spec: Any) -> tuple[str, str]:
    if not isinstance(spec, str) or ":" not in spec:
        raise TransformLoadError(str(spec), "it has no ':function' part")
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise TransformLoadError(spec, f"{attr!r} is not a function name")
    return target, attr


def _source_file(spec: str, target: str) -> Path | None:
    """The file that holds the transform's module, or None (a built-in or namespace module)."""
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        task_root = os.environ.get("LAMBDA_TASK_ROOT")
        if not path.is_file() and task_root and not Path(target).is_absolute():
            path = Path(task_root, target)  # the packaged spec, relative to the Lambda package
        if not path.is_file():
            raise TransformLoadError(spec, f"file {path} does not exist")
        return path
    _add_lambda_root()
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError) as exc:
        raise TransformLoadError(spec, f"module {target!r} cannot be imported ({exc})") from None
    if found is None:
        raise TransformLoadError(spec, f"module {target!r} cannot be imported")
    origin = found.origin
    return Path(origin) if origin and origin not in ("built-in", "frozen") and Path(origin).is_file() else None


def _file_digest(spec: str) -> str:
    """The SHA-256 of the transform's own source file ("" when it has none), read now."""
    target, _ = _split(spec)
    path = _source_file(spec, target)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else ""


def code_files(spec: str, *, strict: bool = True) -> dict[str, Path] | None:
    """The files that ship with the transform, by their name in the Lambda package; None if it cannot ship.

    A ``path/to/file.py`` transform ships with its folder (its sibling modules,
    and packages vendored there with ``pip install --target``), under
    ``transforms/``; a ``module:function`` transform under ``lambda/`` ships with
    its top-level package. Python files and the files of packages are taken;
    hidden folders, ``__pycache__``, virtualenvs and ``node_modules`` are not.
    A folder too big to ship raises TransformLoadError, or gives None when not
    ``strict`` (the local engine needs no package).
    """
    target, _ = _split(spec)
    if target.endswith(".py"):
        path = _source_file(spec, target)
        assert path is not None
        found = _folder_files(spec, path.parent, strict)
        return None if found is None else {f"transforms/{name}": file for name, file in found.items()}
    top = LAMBDA_ROOT / target.split(".")[0]
    if top.is_dir():
        found = _folder_files(spec, top, strict)
        return None if found is None else {f"{top.name}/{name}": file for name, file in found.items()}
    if top.with_suffix(".py").is_file():
        return {top.with_suffix(".py").name: top.with_suffix(".py")}
    return None


#: A transform's folder ships whole, so it must look like code, not like a home folder.
MAX_FOLDER_FILES = 5_000
MAX_FOLDER_BYTES = 200 * 2**20
_SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages"}


def _folder_files(spec: str, folder: Path, strict: bool) -> dict[str, Path] | None:
    files: dict[str, Path] = {}
    size = 0
    seen = 0
    for current, dirs, names in os.walk(folder):
        here = Path(current)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in _SKIPPED_DIRS and not (here / d / "pyvenv.cfg").exists()
        )
        in_package = (here / "__init__.py").is_file() and here != folder
        for name in sorted(names):
            seen += 1
            if name.startswith(".") or name.endswith(".pyc") or not (name.endswith(".py") or in_package):
                continue
            path = here / name
            files[path.relative_to(folder).as_posix()] = path
            size += path.stat().st_size
        if len(files) > MAX_FOLDER_FILES or size > MAX_FOLDER_BYTES or seen > 20 * MAX_FOLDER_FILES:
            if not strict:
                return None
            raise TransformLoadError(
                spec,
                f"its folder {folder} ships whole with the transform, and it holds more than "
                f"{MAX_FOLDER_FILES:,} files or {MAX_FOLDER_BYTES // 2**20} MiB; put the transform (and what it "
                "imports) in a folder of its own",
            )
    return files


def transform_digest(spec: str) -> str:
    """The SHA-256 of the code that ships with the transform (its folder), read now.

    A dry run records it and 03 compares it, so an edit to the transform or to
    a module beside it after the dry run is caught. A folder too big to ship
    (a transform kept in a home folder, run locally) counts the file alone.
    """
    files = code_files(spec, strict=False)
    if files is None:
        return _file_digest(spec)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name].read_bytes()).digest())
    return digest.hexdigest()


def load_transform(spec: str) -> Transform:
    """Return the callable that ``spec`` names, or raise TransformLoadError.

    Loads are cached by the source file's content: an edited file is loaded again.
    A file transform's folder is appended to ``sys.path``, as in the Lambda, so
    it can import the modules beside it.
    """
    return _load(spec, _file_digest(spec))


@functools.lru_cache(maxsize=32)
def _load(spec: str, digest: str) -> Transform:
    target, attr = _split(spec)
    module = _load_file(spec, target) if target.endswith(".py") else _import(spec, target, digest)
    func = getattr(module, attr, None)
    if func is None:
        raise TransformLoadError(spec, f"{target} has no attribute {attr!r}")
    if not callable(func):
        raise TransformLoadError(spec, f"{target}:{attr} is a {type(func).__name__}, not callable")
    return func  # type: ignore[no-any-return]


def _add_lambda_root() -> None:
    # First, so that its ``transforms`` package wins over a file transform's folder holding a transforms.py.
    if LAMBDA_ROOT.is_dir() and str(LAMBDA_ROOT) not in sys.path:
        sys.path.insert(0, str(LAMBDA_ROOT))


def _import(spec: str, module_name: str, digest: str) -> Any:
    _add_lambda_root()
    try:
        module = importlib.import_module(module_name)
        loaded = getattr(module, "__file__", None)
        if digest and loaded and loaded.endswith(".py"):
            source = Path(loaded).read_bytes()
            if hashlib.sha256(source).hexdigest() == digest and getattr(module, "__ddbnb_digest__", digest) != digest:
                # Imported before its file changed: run the new source (not bytecode keyed by mtime).
                exec(compile(source, loaded, "exec"), module.__dict__)
            setattr(module, "__ddbnb_digest__", digest)  # noqa: B010
        return module
    except ModuleNotFoundError as exc:
        raise TransformLoadError(spec, f"module {exc.name!r} cannot be imported") from None
    except Exception as exc:  # the module itself failed while importing
        raise TransformLoadError(spec, f"importing it raised {type(exc).__name__}: {exc}") from None


def _load_file(spec: str, file_name: str) -> Any:
    path = _source_file(spec, file_name)
    assert path is not None
    if str(path.parent) not in sys.path:  # the modules beside it, as in the Lambda package
        sys.path.append(str(path.parent))
    name = f"ddbnb_transform_{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None:
        raise TransformLoadError(spec, f"{path} is not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        # Compiled from the source itself: cached bytecode keyed by mtime could be stale.
        exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    except Exception as exc:
        del sys.modules[name]
        raise TransformLoadError(spec, f"running {path} raised {type(exc).__name__}: {exc}") from None
    return module


def lambda_transform_spec(transform: str) -> str:
    """The name ``transform`` has inside the Lambda package: a file moves, with its folder, to ``transforms/``.

    It stays a file path (relative to the package), loaded by path as here, so
    no module of the folder can shadow, or be shadowed by, a package's name.
    """
    target, _, function = transform.rpartition(":")
    if target.endswith(".py"):
        return f"transforms/{Path(target).name}:{function}"
    return transform
