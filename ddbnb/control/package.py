"""Build the Lambda package: the handler, the worker part of ddbnb and the user's transform.

The build is deterministic (sorted entries, fixed timestamps and modes), so the
same content gives the same bytes and the S3 key can carry the content hash:
CloudFormation then updates the function only on a real change.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ddbnb.exceptions import PackageImportError, TransformLoadError
from ddbnb.paths import LAMBDA_SOURCE
from ddbnb.worker.transforms import code_files, lambda_transform_spec, load_transform

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
    """The files that carry the transform (its folder), and the spec that names it inside the package."""
    load_transform(spec)  # fails early, with a clear error, when the spec is wrong
    files = code_files(spec)
    if files is None:
        raise TransformLoadError(
            spec, f"the module is not under {LAMBDA_SOURCE}, so it cannot be packaged; name it by file path"
        )
    return {name: path.read_bytes() for name, path in files.items()}, lambda_transform_spec(spec)


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


#: What the Lambda Python runtime holds besides the package: boto3 and what it imports.
RUNTIME_MODULES = ("boto3", "botocore", "jmespath", "dateutil", "s3transfer", "urllib3", "six")
_IMPORT_CHECK = """
import importlib.machinery, json, sys
task, site, spec, runtime = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4].split(","))

class Runtime:
    def find_spec(self, name, path=None, target=None):
        if path is None and name.partition(".")[0] in runtime:
            return importlib.machinery.PathFinder.find_spec(name, [site])
        return None

sys.meta_path.append(Runtime())
sys.path.insert(0, task)
try:
    import handler
    from ddbnb.worker.transforms import load_transform
    load_transform(spec)
except BaseException as error:
    cause = error if isinstance(error, ModuleNotFoundError) else error.__context__
    if isinstance(cause, ModuleNotFoundError):
        print(json.dumps({"missing": cause.name}))
        sys.exit(3)
    print(json.dumps({"error": type(error).__name__ + ": " + str(error)}))
    sys.exit(4)
"""


def check_package_imports(package: LambdaPackage, transform: str) -> None:
    """Import the handler and the transform from the package alone, as the Lambda runtime will.

    Runs in a clean interpreter (``-I -S``: the standard library only) with the
    unpacked package first on ``sys.path`` and only boto3 and its dependencies
    beside it, so a module the transform imports but the package lacks fails
    here, at deploy, with its name (PackageImportError), not in every invocation.
    """
    site = sysconfig.get_paths()["purelib"]
    with tempfile.TemporaryDirectory(prefix="ddbnb-package-") as folder:
        zipfile.ZipFile(io.BytesIO(package.data)).extractall(folder)
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _IMPORT_CHECK,
                folder,
                site,
                package.transform,
                ",".join(RUNTIME_MODULES),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=folder,
        )
    if done.returncode == 0:
        return
    lines = done.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else {}
    except ValueError:
        found = {}
    raise PackageImportError(transform, found.get("missing", ""), found.get("error") or done.stderr.strip()[-500:])
