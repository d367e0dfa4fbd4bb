"""Start an embedded local Ray, or join a cluster (``ray.address`` or ``RAY_ADDRESS``)."""
from __future__ import annotations

import os
from contextlib import contextmanager

from cluster.config import RayConfig


def stop_on_sigterm() -> None:
    """SIGTERM as Ctrl-C: ``KeyboardInterrupt`` unwinds the command (Ray shut down, files
    already written left complete: they are renamed into place), and ``main`` says how to
    resume. ``serve`` replaces it with its own drain."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextmanager
def ray_session(cfg: RayConfig):
    import ray

    if ray.is_initialized():  # a caller (or a test) already owns the session
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS") or cfg.address
    if address:
        ray.init(address=address, namespace=cfg.namespace, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=cfg.num_cpus or None, num_gpus=cfg.num_gpus or None, include_dashboard=False,
                 namespace=cfg.namespace, log_to_driver=False, configure_logging=False)
    stop_on_sigterm()  # ray.init set its own handler (sys.exit(15)); ours unwinds the same way as Ctrl-C
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def cluster_session(cfg, learner: bool = False):
    """``ray_session`` for a whole ``AppConfig``: the preset's resource plan is checked
    against the cluster first, so an impossible preset fails before any actor starts."""
    from cluster.resources import check_cluster

    with ray_session(cfg.ray) as ray:
        check_cluster(cfg, learner)
        yield ray


def live_actors():
    """(class name, node id, pid) of every live actor, read from the GCS: unlike
    ``ray.util.state`` it needs no dashboard, which our local sessions do not start."""
    from ray._private import state

    return [(a["ActorClassName"], a["Address"]["NodeID"], a["Pid"])
            for a in state.actors(actor_state_name="ALIVE").values()]
