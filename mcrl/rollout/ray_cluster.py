"""Joining a Ray cluster, or starting an embedded one, for rollout workers and learner actors."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from mcrl.common.threads import available_cpus

# Whether connect_ray started the Ray instance this process uses (then mcrl also stops it).
_started_embedded = False


class _DropDefaultTokenNotice(logging.Filter):
    """Ray announces on every new local cluster that token authentication, its default, is on.
    That is the secure default working as meant; the warning that it is *off* still passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this")


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``, else None (an embedded Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast, naming the address, instead of letting ray.init wait on a dead one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"Ray address {address!r} must look like HOST:PORT (or 'auto', or ray://HOST:PORT)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {exc}") from None


def connect_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_mb: int = 512,
    dashboard: bool = False,
    log_to_driver: bool = True,
) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start an embedded Ray.

    Returns whether this call started Ray. An embedded Ray gets a bounded object store and no
    dashboard unless asked; a cluster's own resources are never overridden. ``log_to_driver``:
    whether the output of Ray's worker processes is printed here too.
    """
    address = cluster_address(address)
    if not address:
        # A one-machine Ray stays on loopback (no firewall prompts, no traffic to the machine's
        # network address). Ray reads this when it is first imported, so set it before.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    if address:
        if address != "auto" and not address.startswith("ray://"):
            _check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
    else:
        global _started_embedded
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            _DropDefaultTokenNotice()
        )
        ray.init(
            address="local",  # a new instance, even if a stale cluster file says otherwise
            num_cpus=num_cpus or available_cpus(),
            include_dashboard=dashboard,
            object_store_memory=object_store_mb * 2**20,
            logging_level=logging.WARNING,
            log_to_driver=log_to_driver,
        )
        _started_embedded = True
    # ray.init replaces the driver's SIGTERM handler with one that exits at once. A handler the
    # caller set itself (mcrl's CLI saves the run's last finished iteration) is put back.
    if callable(sigterm_handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_handler)
    return True


def shutdown_embedded_ray() -> None:
    """Stop the embedded Ray that :func:`connect_ray` started, if it did.

    Left to Ray's exit hook, an embedded cluster is torn down while the interpreter is already
    exiting, and its processes report errors such as "Failed to kill actor NIL_ID" on the way.
    A joined cluster, or a Ray the caller started, is left alone.
    """
    global _started_embedded
    if _started_embedded:
        import ray

        ray.shutdown()
        _started_embedded = False
