"""holdfastd and systemd's notify protocol (deploy/holdfastd.service is Type=notify).

A Unix datagram socket stands in for systemd: holdfastd started with NOTIFY_SOCKET (and
WATCHDOG_USEC) must send READY=1 only once its socket accepts connections, STATUS= lines that
follow its state, WATCHDOG=1 every half period while its loop answers, and STOPPING=1 on SIGTERM,
in that order. Without a reachable notify socket it must serve as usual.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import daemon as hf


def connectable(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class NotifyTest(unittest.TestCase):
    def setUp(self) -> None:
        hf.require_daemon()
        self.tmp = tempfile.mkdtemp(prefix="hf-notify-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.tmp], check=False))
        self.notify_path = os.path.join(self.tmp, "notify")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.listener.bind(self.notify_path)
        self.addCleanup(self.listener.close)
        self.daemon = hf.Daemon(node_id="notify", start=False)
        self.addCleanup(self.daemon.close)
        self.messages: list = []  # (seconds since start, text, daemon socket connectable)

    def start(self, env_extra: dict) -> None:
        env = dict(os.environ)
        env.update(env_extra)
        log = open(self.daemon.log_path, "ab")
        self.daemon.proc = subprocess.Popen(self.daemon.args, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, preexec_fn=hf._die_with_parent)
        log.close()
        self.t0 = time.monotonic()

    def receive(self, until, timeout: float = 20.0) -> None:
        """Collects messages until until(messages) is true."""
        deadline = time.monotonic() + timeout
        while not until(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f"timed out; messages so far: {self.messages}\n{self.daemon.log()}")
            self.listener.settimeout(left)
            try:
                data = self.listener.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic() - self.t0, data.decode(),
                                  connectable(self.daemon.socket)))

    @staticmethod
    def index(messages: list, key: str) -> int:
        for i, (_, text, _) in enumerate(messages):
            if key in text.split("\n"):
                return i
        return -1

    def statuses(self, start: int = 0) -> list:
        out = []
        for _, text, _ in self.messages[start:]:
            out += [line[len("STATUS="):] for line in text.split("\n")
                    if line.startswith("STATUS=")]
        return out

    def test_ready_status_watchdog_stopping_in_order(self) -> None:
        self.start({"NOTIFY_SOCKET": self.notify_path, "WATCHDOG_USEC": "400000"})
        self.receive(lambda m: self.index(m, "READY=1") >= 0)
        ready = self.index(self.messages, "READY=1")
        _, ready_text, ready_connectable = self.messages[ready]
        self.assertTrue(ready_connectable,
                        "READY=1 arrived before the daemon's socket accepted connections")
        self.assertTrue(self.statuses()[0].startswith("recovering"), self.messages)
        self.assertIn("STATUS=serving on " + self.daemon.socket, ready_text)

        # The heartbeat: WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC) with the status.
        self.receive(lambda m: sum("WATCHDOG=1" in t.split("\n") for _, t, _ in m[ready:]) >= 4)
        beats = [t for t, text, _ in self.messages[ready:] if "WATCHDOG=1" in text.split("\n")]
        self.assertLess(beats[-1] - beats[0], 3 * 0.4 * 2, beats)
        self.assertIn("serving: 0 jobs, 0 versions, 0.0 GiB of 1.0 GiB used",
                      self.statuses(ready + 1))

        # STATUS= follows the daemon's state: a saved step shows up as a job and a version.
        if hf._executable(hf.SNAPSHOT_TOOL):
            subprocess.run([hf.SNAPSHOT_TOOL, "--socket", self.daemon.socket, "--job", "j",
                            "--items", "2", "--item-bytes", "65536", "save", "--steps", "0:0"],
                           check=True, capture_output=True, timeout=30)
            self.receive(lambda m: any(s.startswith("serving: 1 job, 1 version,")
                                       for s in self.statuses(ready + 1)))

        self.daemon.proc.send_signal(signal.SIGTERM)
        self.receive(lambda m: self.index(m, "STOPPING=1") >= 0)
        self.assertEqual(self.daemon.proc.wait(timeout=20), 0, self.daemon.log())
        stopping = self.index(self.messages, "STOPPING=1")
        self.assertGreater(stopping, ready)
        self.assertIn("STATUS=stopping; snapshots stay in " + self.daemon.shm,
                      self.messages[stopping][1])
        # Nothing after STOPPING=1 (the heartbeat ended before it was sent).
        self.listener.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            self.listener.recv(4096)
        self.assertEqual(len(self.messages), stopping + 1, self.messages)

    def test_without_watchdog_no_keepalives(self) -> None:
        self.start({"NOTIFY_SOCKET": self.notify_path})
        self.receive(lambda m: self.index(m, "READY=1") >= 0)
        self.assertTrue(self.messages[self.index(self.messages, "READY=1")][2])
        self.daemon.proc.send_signal(signal.SIGTERM)
        self.receive(lambda m: self.index(m, "STOPPING=1") >= 0)
        self.assertEqual(self.daemon.proc.wait(timeout=20), 0)
        self.assertFalse(any("WATCHDOG=1" in t for _, t, _ in self.messages), self.messages)

    def test_unreachable_notify_socket_still_serves(self) -> None:
        self.start({"NOTIFY_SOCKET": os.path.join(self.tmp, "nobody-listens")})
        deadline = time.monotonic() + 20
        while not connectable(self.daemon.socket):
            self.assertIsNone(self.daemon.proc.poll(), self.daemon.log())
            self.assertLess(time.monotonic(), deadline, self.daemon.log())
            time.sleep(0.02)
        self.daemon.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.daemon.proc.wait(timeout=20), 0, self.daemon.log())
        self.assertIn("sd_notify(READY=1)", self.daemon.log())


if __name__ == "__main__":
    unittest.main()
