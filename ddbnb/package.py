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
from ddbnb.servers import project_root
from ddbnb.transforms import load_transform

#: The modules the segment worker needs; they import only the standard library and boto3.
WORKER_MODULES = (
    "clients",
    "evaluate",
    "exceptions",
    "items",
    "lambda_entry",
    "params",
    "segment",
    "tables",
    "transforms",
    "wire",
    "writes",
)
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
    root = project_root() / "lambda"
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


def lambda_transform_spec(transform: str) -> str:
    """The name ``transform`` has inside the Lambda package (files move to ``transforms/``)."""
    target, _, function = transform.rpartition(":")
    if target.endswith(".py"):
        return f"transforms.{Path(target).stem}:{function}"
    return transform


def build_lambda_package(transform: str) -> LambdaPackage:
    """Zip lambda/handler.py, the worker modules of ddbnb and the transform, deterministically."""
    package = Path(__file__).resolve().parent
    files = {"handler.py": (project_root() / "lambda" / "handler.py").read_bytes()}
    files["ddbnb/__init__.py"] = b'"""ddbnb segment worker (Lambda package)."""\n'
    for module in WORKER_MODULES:
        files[f"ddbnb/{module}.py"] = (package / f"{module}.py").read_bytes()
    transform_files, packaged_spec = _transform_files(transform)
    files.update(transform_files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            _add(archive, name, files[name])
    return LambdaPackage(buffer.getvalue(), packaged_spec)
