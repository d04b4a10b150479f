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


def transform_digest(spec: str) -> str:
    """The SHA-256 of the transform's source file ("" when it has none), read now."""
    target, _ = _split(spec)
    path = _source_file(spec, target)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else ""


def load_transform(spec: str) -> Transform:
    """Return the callable that ``spec`` names, or raise TransformLoadError.

    Loads are cached by the source file's content: an edited file is loaded again.
    """
    return _load(spec, transform_digest(spec))


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
    if LAMBDA_ROOT.is_dir() and str(LAMBDA_ROOT) not in sys.path:
        sys.path.append(str(LAMBDA_ROOT))


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
    path = Path(file_name).expanduser().resolve()
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
    """The name ``transform`` has inside the Lambda package (files move to ``transforms/``)."""
    target, _, function = transform.rpartition(":")
    if target.endswith(".py"):
        return f"transforms.{Path(target).stem}:{function}"
    return transform
