"""Retiring versions: drain (admitted requests finish, new ones go to the versions that replaced them or
are refused), then unload their runtimes on a thread and give the freed memory back.

A drain that outlasts its timeout is logged and the version unloads anyway: a stuck request must not
keep a replaced version, and its memory, forever. The order is drain → close → unload: closing the
scheduler answers the queued requests at once and marks the version released, so what still runs is cut
short with UNAVAILABLE (``scheduling/admission.py``) instead of failing inside a freed runtime; running
calls then get ``UNLOAD_GRACE_S`` more to end before the runtimes are released under them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from modelserve.repository.lifecycle import ModelRecord
from modelserve.repository.loaded import LoadedVersion
from modelserve.repository.release import release_free_memory
from modelserve.scheduling.admission import wait_until_idle

__all__ = ["UNLOAD_GRACE_S", "retire", "unload_blocking"]

log = logging.getLogger(__name__)

# After a drain ran out and the scheduler closed: how long calls still running may take to end before their
# runtimes unload under them. An ONNX or scikit-learn call takes milliseconds, so this is cheap and spares
# them; a model stuck for longer is unloaded anyway (a python worker is stopped) and its caller gets
# UNAVAILABLE. Short, because it adds to every unload that outlasts its drain, shutdown included.
UNLOAD_GRACE_S = 1.0


async def retire(
    versions: Iterable[LoadedVersion], *, drain_timeout_s: float = 30.0, record: ModelRecord | None = None
) -> None:
    """Drain then unload ``versions``, one after the other. With ``record``, each shows DRAINING in the
    index until it has unloaded (unless it serves again by then). ``drain_timeout_s``: seconds per version."""
    versions = list(versions)
    if record is not None:
        record.start_draining(versions)
    for version in versions:
        scheduler = version.scheduler
        finished = await scheduler.drain(drain_timeout_s)
        scheduler.close()
        if not finished and not await wait_until_idle(lambda s=scheduler: s.in_flight, UNLOAD_GRACE_S):
            log.warning(
                "model %s version %s: %d requests still in flight after its drain (%.1f s) and %.1f s more; "
                "unloading anyway, they fail with UNAVAILABLE",
                version.name,
                version.version,
                scheduler.in_flight,
                drain_timeout_s,
                UNLOAD_GRACE_S,
            )
        await asyncio.to_thread(unload_blocking, version)
        if record is not None:
            record.drained(version.version)


def unload_blocking(version: LoadedVersion) -> None:
    """Close the scheduler (a no-op if :func:`retire` closed it already) and unload every runtime
    instance; blocking (a worker thread). An instance that fails to unload is logged and the others
    still unload."""
    version.scheduler.close()
    for runtime in version.runtimes:
        try:
            runtime.unload()
        except Exception:
            log.exception("model %s version %s: unload failed", version.name, version.version)
    release_free_memory()
