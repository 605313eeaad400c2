"""A private holdfastd for Python tests: its own socket, catalog and shared-memory directory.

The daemon binary comes from $HOLDFAST_HOLDFASTD (ctest sets it to the build's holdfastd). Tests
that need a daemon skip when it is not set.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from typing import Optional

HOLDFASTD = os.environ.get("HOLDFAST_HOLDFASTD", "")


def require_daemon() -> None:
    if not HOLDFASTD or not os.access(HOLDFASTD, os.X_OK):
        raise unittest.SkipTest("HOLDFAST_HOLDFASTD is not set to a holdfastd binary")


class Daemon:
    """holdfastd on <tmp>/sock with segments in /dev/shm/<unique>/; removed by close()."""

    def __init__(self, budget: str = "1GiB", retain: int = 2, extra: Optional[list] = None) -> None:
        require_daemon()
        self.root = tempfile.mkdtemp(prefix="hf-pytest-")
        self.shm = tempfile.mkdtemp(prefix="hf-pytest-", dir="/dev/shm")
        self.socket = os.path.join(self.root, "sock")
        self.endpoint = "unix:" + self.socket
        self.log_path = os.path.join(self.root, "daemon.log")
        self.args = [
            HOLDFASTD, "--node-id", "pytest", "--socket", self.socket,
            "--data-dir", os.path.join(self.root, "data"), "--shm-dir", self.shm,
            "--shm-prefix", "hfpy", "--memory-budget", budget, "--retain", str(retain),
            "--log-level", "info",
        ] + list(extra or [])
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                raise RuntimeError(f"holdfastd exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"holdfastd did not listen within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.start()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)
