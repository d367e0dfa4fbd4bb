"""Named fault points for the reliability suite: ``ANOMALYAGENT_FAULT=<point>:<step>`` makes
the process that reaches that point at that step SIGKILL itself — a crash exactly where a
real one would hurt most (mid-update, mid-checkpoint-write). Unset, a point costs one
environment lookup."""
from __future__ import annotations

import os
import signal

FAULT_ENV = "ANOMALYAGENT_FAULT"
POINTS = ("learner_step", "checkpoint_write")


def fault_point(name: str, step: int) -> None:
    if os.environ.get(FAULT_ENV) == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
