"""Optional per-version checksum manifests: ``<model>/<version>/SHA256SUMS``.

The format is ``sha256sum``'s own, so a manifest is made with one command in the version folder::

    cd iris/2 && sha256sum model.onnx > SHA256SUMS

When the file exists, it must list every file of the version folder (a file added beside the model is
refused as well), and every file it lists must exist inside the folder and hash to the listed digest,
or the load fails naming the file and both digests; the version that serves keeps serving.
Paths in the manifest are relative and must stay inside the folder (no ``..``, no absolute paths), and
the manifest and every file it names pass the repository's jail check (``core/paths.py``: no symbolic
links unless ``repository.allow_symlinks``, never one out of the repository), so a manifest can never
make the server read elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from modelserve.core.errors import ModelLoadError
from modelserve.core.paths import inside

__all__ = ["MANIFEST_FILENAME", "verify_manifest"]

MANIFEST_FILENAME = "SHA256SUMS"
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_manifest(version_dir: Path, owner: str, *, repository: Path, allow_symlinks: bool) -> int:
    """Check ``version_dir`` against its manifest, if it has one. Returns the number of files checked
    (0 without a manifest). ``repository`` is the repository root every listed file must stay in, and
    ``allow_symlinks`` is ``repository.allow_symlinks``. Raises :class:`ModelLoadError` (stage
    "checksum") naming the file and both digests, or the refused link."""
    manifest = version_dir / MANIFEST_FILENAME
    if not manifest.is_file() and not manifest.is_symlink():
        return 0
    manifest = inside(
        repository, manifest, what=f"{owner}: {MANIFEST_FILENAME}", allow_symlinks=allow_symlinks, stage="checksum"
    )
    root = version_dir.resolve()
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{owner}: cannot read {MANIFEST_FILENAME}: {type(exc).__name__}", stage="checksum"
        ) from exc
    checked = 0
    listed: set[Path] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise ModelLoadError(
                f"{owner}: {MANIFEST_FILENAME} line {number} is not '<sha256 hex>  <file>' (make it with sha256sum)",
                stage="checksum",
            )
        expected, name = match.group(1).lower(), match.group(2)
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelLoadError(
                f"{owner}: {MANIFEST_FILENAME} line {number} names '{name}', outside the version folder",
                stage="checksum",
            )
        # Resolved by the jail check, so a listed file that is a link out of the repository is never hashed.
        target = inside(
            repository,
            root / name,
            what=f"{owner}: {MANIFEST_FILENAME} line {number}",
            allow_symlinks=allow_symlinks,
            must_exist=False,
            stage="checksum",
        )
        if not target.is_relative_to(root) or target == root:
            raise ModelLoadError(
                f"{owner}: {MANIFEST_FILENAME} line {number} names '{name}', outside the version folder",
                stage="checksum",
            )
        try:
            actual = _sha256(target)
        except OSError as exc:
            raise ModelLoadError(
                f"{owner}: checksum check failed: '{name}' listed in {MANIFEST_FILENAME} cannot be read "
                f"({type(exc).__name__})",
                stage="checksum",
            ) from exc
        if actual != expected:
            raise ModelLoadError(
                f"{owner}: checksum mismatch for '{name}': {MANIFEST_FILENAME} says sha256 {expected}, "
                f"the file has sha256 {actual}; the file is corrupt or was replaced",
                stage="checksum",
            )
        checked += 1
        listed.add(target)
    unlisted = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and path.name != MANIFEST_FILENAME and path.resolve() not in listed
    )
    if unlisted:
        raise ModelLoadError(
            f"{owner}: files not listed in {MANIFEST_FILENAME}: {', '.join(unlisted[:5])}; list every file of the "
            "version folder (sha256sum * > SHA256SUMS) or remove the extra ones",
            stage="checksum",
        )
    return checked
