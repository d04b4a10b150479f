"""Load a user's transform from ``module:function`` or ``path/to/file.py:function``.

Only the standard library: this module ships inside the Lambda package.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddbnb.exceptions import TransformLoadError

Transform = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@functools.lru_cache(maxsize=32)
def load_transform(spec: str) -> Transform:
    """Return the callable that ``spec`` names, or raise TransformLoadError."""
    if not isinstance(spec, str) or ":" not in spec:
        raise TransformLoadError(str(spec), "it has no ':function' part")
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise TransformLoadError(spec, f"{attr!r} is not a function name")
    module = _load_file(spec, target) if target.endswith(".py") else _import(spec, target)
    func = getattr(module, attr, None)
    if func is None:
        raise TransformLoadError(spec, f"{target} has no attribute {attr!r}")
    if not callable(func):
        raise TransformLoadError(spec, f"{target}:{attr} is a {type(func).__name__}, not callable")
    return func  # type: ignore[no-any-return]


#: The Lambda source root of a checkout: ``module:function`` specs resolve there too.
LAMBDA_ROOT = Path(__file__).resolve().parents[1] / "lambda"


def _import(spec: str, module_name: str) -> Any:
    if LAMBDA_ROOT.is_dir() and str(LAMBDA_ROOT) not in sys.path:
        sys.path.append(str(LAMBDA_ROOT))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TransformLoadError(spec, f"module {exc.name!r} cannot be imported") from None
    except Exception as exc:  # the module itself failed while importing
        raise TransformLoadError(spec, f"importing it raised {type(exc).__name__}: {exc}") from None


def _load_file(spec: str, file_name: str) -> Any:
    path = Path(file_name).expanduser().resolve()
    if not path.is_file():
        raise TransformLoadError(spec, f"file {path} does not exist")
    name = f"ddbnb_transform_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TransformLoadError(spec, f"{path} is not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise TransformLoadError(spec, f"running {path} raised {type(exc).__name__}: {exc}") from None
    return module
