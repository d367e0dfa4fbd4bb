"""A throw-away ``ray start --head`` with token authentication, for job-submission tests.

The token is generated here and handed to the head and to every client through
``RAY_AUTH_MODE=token`` / ``RAY_AUTH_TOKEN`` (nothing is written to the home folder). The
head's processes are found by its private temp folder and stopped — only this cluster;
``ray stop`` would also stop the test session's own local Ray.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalHead:
    def __init__(self, num_cpus: int = 8):
        self.temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
        self.token = secrets.token_hex(16)
        self.port, self.dashboard_port = free_port(), free_port()
        # every port of its own: the test session's local Ray may hold the default agent ports
        self.agent_ports = {flag: free_port() for flag in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
            "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")}
        self.num_cpus = num_cpus
        bin_dir = str(Path(sys.executable).parent)
        self.env: Dict[str, str] = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                                    "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, env: Dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        exe = str(Path(sys.executable).parent / "ray")
        return subprocess.run([exe, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> "LocalHead":
        r = self.ray("start", "--head", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}",
                     "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--num-cpus={self.num_cpus}",
                     "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
                     *[f"--{flag}={port}" for flag, port in self.agent_ports.items()], timeout=120)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{r.stdout}\n{r.stderr}")
        try:
            self.wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def client(self, token: str | None = None):
        """A job client that sends the bearer token itself (the test process runs with auth off)."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {token or self.token}"})

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until the head's job agent accepts a job: right after ``ray start`` it answers
        "No available agent to submit job"."""
        import time

        from ray.job_submission import JobStatus

        client, deadline = self.client(), time.monotonic() + timeout_s
        while True:
            try:
                job = client.submit_job(entrypoint="true")
                break
            except RuntimeError as e:
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # polling a condition, with a deadline
        while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            if time.monotonic() > deadline:
                raise TimeoutError("the readiness job did not finish")
            time.sleep(0.5)

    def processes(self) -> List:
        import psutil

        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(self.temp_dir in a for a in (p.info["cmdline"] or [])):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
