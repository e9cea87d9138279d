"""The lock every promoter of one model registry shares: promotions and rollbacks run one at a time.

Its scope follows the tracking store's:

- a store on this machine (SQLite, a file store): an exclusive file lock next to it;
- a tracking *server* (``http(s)://``), which promoters on several machines share: a Prefect global
  concurrency limit of one slot on the Prefect server they share (``PREFECT_API_URL``), named after
  the registered model. The limit is created on first use. A slot is held under a lease that the
  holder renews, so a promoter that dies frees it when the lease runs out instead of blocking for ever.

A tracking server with no Prefect server configured falls back to the file lock and says so: that
serialises the promoters of this machine only.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LEASE_S = 300.0  # a dead holder's slot is free again after this long


class LockError(RuntimeError):
    """The shared lock could not be taken (server unreachable, timeout, a limit of the wrong size)."""


def limit_name(registered_model: str) -> str:
    """The Prefect global concurrency limit that serialises the promotions of ``registered_model``."""
    return "chintox-promote-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", registered_model)


def prefect_api_url() -> str | None:
    """The Prefect server this process talks to (env or Prefect profile), None for an ephemeral one."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def kind(tracking_uri: str) -> str:
    """``prefect`` for a tracking server when a Prefect server is configured, else ``file``."""
    if tracking_uri.startswith(("http://", "https://")):
        if prefect_api_url():
            return "prefect"
        log.warning("the tracking store %s is a server but no Prefect server is configured "
                    "(PREFECT_API_URL): promotions are serialised on this machine only", tracking_uri)
    return "file"


@contextlib.contextmanager
def registry_lock(tracking_uri: str, registered_model: str, file: Path, timeout_s: float) -> Iterator[str]:
    """Hold the promotion lock of ``registered_model``; yields what holds it (``file:...`` or
    ``prefect:<limit>@<server>``), which a decision records."""
    if kind(tracking_uri) == "prefect":
        with _prefect_slot(limit_name(registered_model), timeout_s) as held:
            yield held
        return
    from filelock import FileLock, Timeout

    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(file), timeout=timeout_s):
            yield f"file:{file}"
    except Timeout as e:
        raise LockError(f"promotion lock {file}: not free after {timeout_s:.0f} s (another promotion "
                        "is running, or a stale process holds it)") from e


def ensure_limit(name: str) -> None:
    """Create the one-slot global concurrency limit ``name`` if the server has none by that name; an
    existing one must have exactly one slot and be active."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            lim = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another promoter created it just now
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            lim = client.read_global_concurrency_limit_by_name(name)
    if lim.limit != 1 or not lim.active:
        raise LockError(f"Prefect global concurrency limit {name!r} has limit={lim.limit}, "
                        f"active={lim.active}: promotions need exactly one active slot "
                        f"(`prefect gcl update {name} --limit 1` and `prefect gcl enable {name}`)")


@contextlib.contextmanager
def _prefect_slot(name: str, timeout_s: float) -> Iterator[str]:
    from prefect.concurrency.sync import concurrency

    server = prefect_api_url()
    try:
        ensure_limit(name)
    except LockError:
        raise
    except Exception as e:  # the server is down or unreachable
        raise LockError(f"the promotion lock is the global concurrency limit {name!r} on the Prefect "
                        f"server {server}, which could not be reached ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:300] if str(e) else ''}); nothing was changed") from e
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True,
                                            lease_duration=LEASE_S))
        except TimeoutError as e:
            raise LockError(f"promotion lock {name!r} on {server}: no slot after {timeout_s:.0f} s "
                            "(another promotion is running)") from e
        yield f"prefect:{name}@{server}"
