"""One place that starts or joins Ray, bound to 127.0.0.1 unless a cluster is given.

Every job calls ``init_ray()``: under ``ray job submit`` (``RAY_ADDRESS`` is set) it
joins that cluster; on a laptop it starts a local runtime on 127.0.0.1 with a capped
object store. Tests share one runtime per session (``tests/conftest.py``).
"""

from __future__ import annotations

import os

import ray

from mmrlhf_ray.core import signals

LOCAL_OBJECT_STORE_BYTES = 1 << 30  # 1 GiB: plenty for the shapes world, safe on 24 GiB boxes
# Logical CPUs of a local runtime: at least 4, so an actor pool of 2 (1 CPU each) still
# leaves room for the read tasks feeding it and for a Serve replica. Actors pin torch to
# one thread each, so this oversubscribes a 2-core laptop only logically.
MIN_LOCAL_CPUS = 4


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join ``address`` / ``$RAY_ADDRESS`` if given, else start a local 127.0.0.1 runtime."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {
        "env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        # every worker drops the warnings known to be harmless (mmrlhf_ray/core/console.py)
        "worker_process_setup_hook": "mmrlhf_ray.core.console.quiet_known_warnings",
    }
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        signals.reassert()  # ray.init sets its own SIGTERM handler (sys.exit(15))
        return
    _bind_locally()
    ray.init(
        num_cpus=num_cpus or max(MIN_LOCAL_CPUS, os.cpu_count() or 1),
        _node_ip_address="127.0.0.1",
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        include_dashboard=False,
        runtime_env=env,
        log_to_driver=True,
    )
    signals.reassert()  # ray.init sets its own SIGTERM handler (sys.exit(15))


def _bind_locally() -> None:
    """Make a local runtime listen on 127.0.0.1 only.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when it is imported: unless it
    was ``0`` then, the driver takes the machine's routable address and the GCS, raylet
    and dashboard agent listen on every interface, whatever ``_node_ip_address`` says.
    ``make`` exports it; a bare ``mmrlhf`` or ``python jobs/x.py`` has imported Ray by
    now, so the constant Ray read is set too (only here: a driver joining a cluster
    must keep its real address).
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's own subprocesses
    from ray._private import ray_constants  # no public switch once Ray is imported

    ray_constants.ENABLE_RAY_CLUSTER = False
