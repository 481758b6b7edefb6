"""The repository is a jail: every path the server opens from the model repository stays inside its root.

One check, used by everything that reads or writes under the repository (the model and version folders,
``config.pbtxt``, the model file and the rest of a version folder, ``SHA256SUMS`` entries, warm-up data,
drift profiles, ``aliases.json``)::

    <root>/<model>/<version>/model.onnx
       |      |        |         '-- inside(): each component below the root is looked at with lstat;
       |      |        |             a symbolic link is refused unless allow_symlinks, and refused always
       |      |        |             when it resolves outside the root
       '------'--------'------------ the root itself may be a link (it is resolved once, as the jail)

``allow_symlinks`` is ``repository.allow_symlinks``: False (the default) refuses every symbolic link under
the root; True follows links whose target resolves inside the root. A link that leaves the root is never
followed. Names with ``..`` or absolute names are refused before anything is looked up.

The check returns the resolved path, and callers open that path, so a link swapped after the check is not
followed into the file they open (a component swapped for a link between the check and the ``open`` is
still a race; the repository is the operator's, not an attacker's, and this closes the misconfiguration
that matters: a link that points somewhere else). Refusals are :class:`ModelLoadError` naming the path
relative to the repository, the link, whether its target is inside or outside, and the fix; an outside
target's own path is not in the message, since messages reach clients (see ``core/errors.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from modelserve.core.errors import LoadStage, ModelLoadError

__all__ = ["inside", "inside_tree"]

_ALLOW_HINT = "set repository.allow_symlinks: true to follow links that stay inside the repository"


def _shown(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or "."


def _resolve(path: Path, *, strict: bool) -> Path | None:
    """``path`` resolved, or None where it cannot be (missing with ``strict``, a loop, a permission error)."""
    try:
        return path.resolve(strict=strict)
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError for a symlink loop
        return None


def inside(
    root: Path,
    path: Path,
    *,
    what: str,
    allow_symlinks: bool,
    must_exist: bool = True,
    stage: LoadStage = "load",
) -> Path:
    """``path`` resolved, after checking that it stays inside ``root``.

    ``path`` is ``root`` joined with a relative name (``root / "iris" / "1" / "model.onnx"``), or a path
    already resolved under ``root``. ``what`` names the thing for the message ("model 'iris' version 1:
    model file"). With ``must_exist`` a missing ``path`` is refused too; without it, the part of the path
    that exists is checked and the rest is returned as it would resolve (for a file about to be written).

    Raises :class:`ModelLoadError` with ``stage`` when the name leaves ``root`` (``..``, absolute), when a
    component below ``root`` is a symbolic link and ``allow_symlinks`` is False, when a link resolves
    outside ``root`` (whatever ``allow_symlinks``), or when ``path`` is missing and ``must_exist``.
    Blocking (one ``lstat`` per component); thread-safe.
    """
    real_root = root.resolve()
    relative: Path | None = None
    for base in (root, real_root):
        try:
            relative = path.relative_to(base)
            break
        except ValueError:
            continue
    if relative is None or relative.is_absolute() or ".." in relative.parts:
        shown = path.name if relative is None else relative.as_posix()
        raise ModelLoadError(
            f"{what} '{shown}' names a path outside the model repository; name a file inside it",
            stage=stage,
        )
    parts = relative.parts
    current = real_root
    for count, part in enumerate(parts, start=1):
        current = current / part
        if not current.is_symlink():
            continue
        link = _shown(parts[:count])
        where = f"{what} '{_shown(parts)}'" + ("" if count == len(parts) else f" goes through '{link}', which")
        target = _resolve(current, strict=False)
        if target is None or not target.is_relative_to(real_root):
            raise ModelLoadError(
                f"{where} is a symbolic link that leaves the model repository; links out of the repository "
                "are never followed (whatever repository.allow_symlinks says): move or copy the target into "
                f"the repository and replace the link '{link}' with it",
                stage=stage,
            )
        if not allow_symlinks:
            points_to = _shown(target.relative_to(real_root).parts)
            raise ModelLoadError(
                f"{where} is a symbolic link (to '{points_to}' in the repository), and symbolic links are "
                f"refused: replace the link '{link}' with the file or folder itself, or {_ALLOW_HINT}",
                stage=stage,
            )
        current = target
    resolved = _resolve(current, strict=must_exist)
    if resolved is None:
        raise ModelLoadError(f"{what} '{_shown(parts)}' does not exist or cannot be read", stage=stage)
    if not resolved.is_relative_to(real_root):  # unreachable after the walk above; kept as the invariant
        raise ModelLoadError(f"{what} '{_shown(parts)}' resolves outside the model repository", stage=stage)
    return resolved


def inside_tree(root: Path, folder: Path, *, what: str, allow_symlinks: bool, stage: LoadStage = "load") -> None:
    """Check every symbolic link anywhere under ``folder`` (itself checked with :func:`inside` first).

    For what a runtime may open beyond its model file (ONNX external data, a python model's own modules,
    vocabularies): nothing under a version folder may lead out of the repository. Folders reached through
    an allowed link are walked too, once each. Raises :class:`ModelLoadError` as :func:`inside` does.
    Blocking (walks the folder); thread-safe.
    """
    pending = [inside(root, folder, what=what, allow_symlinks=allow_symlinks, stage=stage)]
    seen: set[Path] = set()
    while pending:
        top = pending.pop()
        if top in seen:
            continue
        seen.add(top)
        for directory, folders, files in os.walk(top, followlinks=False):
            for name in (*folders, *files):
                entry = Path(directory) / name
                if not entry.is_symlink():
                    continue
                target = inside(root, entry, what=what, allow_symlinks=allow_symlinks, stage=stage)
                if target.is_dir():
                    pending.append(target)
