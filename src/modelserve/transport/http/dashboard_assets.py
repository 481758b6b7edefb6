"""The dashboard's static files (``GET /dashboard`` and ``GET /dashboard/<name>``), read once at start.

Only the names in :data:`ASSET_TYPES` exist: a request names a key of that table, never a path, so no
URL (``..``, encoded slashes, absolute paths) can reach another file. The files are package data in
``dashboard/`` beside this module; the vendored chart library's version is in ``dashboard/VENDORED.md``.

Caching: our own files are revalidated on every load (``no-cache`` with an ETag, so an upgraded server is
seen at once and an unchanged file costs a 304); the vendored library changes only with an upgrade and
may be cached for a day.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

__all__ = ["ASSET_TYPES", "PAGE", "Asset", "DashboardAssets"]

PAGE = "index.html"

ASSET_TYPES: dict[str, str] = {
    PAGE: "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}

_VENDORED = frozenset({"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"})


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    cache_control: str


@dataclass(frozen=True, slots=True)
class DashboardAssets:
    """The allow-listed files, by name. Immutable: safe to share between requests."""

    files: dict[str, Asset]

    @classmethod
    def load(cls) -> DashboardAssets:
        """Read every allow-listed file from the package (blocking file reads: call it at start-up).

        Raises ``FileNotFoundError`` naming the file when the installed package lacks one (a wheel built
        without the ``dashboard/*`` package-data glob).
        """
        folder = resources.files("modelserve.transport.http") / "dashboard"
        files = {}
        for name, content_type in ASSET_TYPES.items():
            resource = folder / name
            if not resource.is_file():
                raise FileNotFoundError(
                    f"dashboard file '{name}' is missing from the installed modelserve package; reinstall it, "
                    "or set dashboard.enabled: false"
                )
            body = resource.read_bytes()
            files[name] = Asset(
                body=body,
                content_type=content_type,
                etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
                cache_control="public, max-age=86400" if name in _VENDORED else "no-cache",
            )
        return cls(files)

    def get(self, name: str) -> Asset | None:
        return self.files.get(name)
