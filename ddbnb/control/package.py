"""Build the Lambda package: the handler, the worker part of ddbnb and the user's transform.

The build is deterministic (sorted entries, fixed timestamps and modes), so the
same content gives the same bytes and the S3 key can carry the content hash:
CloudFormation then updates the function only on a real change.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ddbnb.exceptions import TransformLoadError
from ddbnb.paths import LAMBDA_SOURCE
from ddbnb.worker.transforms import lambda_transform_spec, load_transform

#: The Lambda takes the worker folder whole, plus the one exception hierarchy it raises.
#: The import contracts (``.importlinter``) keep both to the standard library and boto3.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
WORKER = PACKAGE_ROOT / "worker"
SHARED = ("exceptions.py",)
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class LambdaPackage:
    """A built Lambda package and the transform spec it runs."""

    data: bytes
    transform: str

    @property
    def sha256(self) -> str:
        """The content hash of the zip."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def key(self) -> str:
        """The S3 key: changes exactly when the content does."""
        return f"ddbnb/lambda-{self.sha256[:20]}.zip"


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data, compresslevel=9)


def _transform_files(spec: str) -> tuple[dict[str, bytes], str]:
    """The files that carry the transform, and the spec that names it inside the package."""
    load_transform(spec)  # fails early, with a clear error, when the spec is wrong
    target = spec.rpartition(":")[0]
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        return {f"transforms/{path.name}": path.read_bytes()}, lambda_transform_spec(spec)
    root = LAMBDA_SOURCE
    relative = Path(*target.split("."))
    for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
        if candidate.is_file():
            files = {str(candidate.relative_to(root)): candidate.read_bytes()}
            for parent in candidate.relative_to(root).parents:
                init = root / parent / "__init__.py"
                if parent != Path(".") and init.is_file():
                    files[str(init.relative_to(root))] = init.read_bytes()
            return files, spec
    raise TransformLoadError(spec, f"the module is not under {root}, so it cannot be packaged; name it by file path")


def build_lambda_package(transform: str) -> LambdaPackage:
    """Zip lambda/handler.py, the ``ddbnb/worker`` folder (with ``ddbnb/exceptions.py``) and the transform."""
    files = {"handler.py": (LAMBDA_SOURCE / "handler.py").read_bytes()}
    files["ddbnb/__init__.py"] = b'"""ddbnb segment worker (Lambda package)."""\n'
    for name in SHARED:
        files[f"ddbnb/{name}"] = (PACKAGE_ROOT / name).read_bytes()
    for path in sorted(WORKER.rglob("*.py")):
        files[f"ddbnb/{path.relative_to(PACKAGE_ROOT).as_posix()}"] = path.read_bytes()
    transform_files, packaged_spec = _transform_files(transform)
    files.update(transform_files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            _add(archive, name, files[name])
    return LambdaPackage(buffer.getvalue(), packaged_spec)
