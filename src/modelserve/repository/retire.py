"""Retiring versions: drain (admitted requests finish, new ones go to the versions that replaced them or
are refused), then unload their runtimes on a thread and give the freed memory back.

A drain that outlasts its timeout is logged and the version unloads anyway: a stuck request must not
keep a replaced version, and its memory, forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from modelserve.repository.lifecycle import ModelRecord
from modelserve.repository.loaded import LoadedVersion
from modelserve.repository.release import release_free_memory

__all__ = ["retire", "unload_blocking"]

log = logging.getLogger(__name__)


async def retire(
    versions: Iterable[LoadedVersion], *, drain_timeout_s: float = 30.0, record: ModelRecord | None = None
) -> None:
    """Drain then unload ``versions``, one after the other. With ``record``, each shows DRAINING in the
    index until it has unloaded (unless it serves again by then). ``drain_timeout_s``: seconds per version."""
    versions = list(versions)
    if record is not None:
        record.start_draining(versions)
    for version in versions:
        finished = await version.scheduler.drain(drain_timeout_s)
        if not finished:
            log.warning(
                "model %s version %s: requests still running after %.0f s drain; unloading anyway",
                version.name,
                version.version,
                drain_timeout_s,
            )
        version.scheduler.close()
        await asyncio.to_thread(unload_blocking, version)
        if record is not None:
            record.drained(version.version)


def unload_blocking(version: LoadedVersion) -> None:
    """Close the scheduler and unload every runtime instance; blocking (a worker thread). An instance
    that fails to unload is logged and the others still unload."""
    version.scheduler.close()
    for runtime in version.runtimes:
        try:
            runtime.unload()
        except Exception:
            log.exception("model %s version %s: unload failed", version.name, version.version)
    release_free_memory()
