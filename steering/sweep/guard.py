"""Run a command that must not outlive the process that started it (the sweep's private MLflow server).

``python -m steering.sweep.guard PID -- CMD ...`` runs CMD as its child, in its own process group, and
ends that whole group (SIGTERM, then SIGKILL) when process PID is gone: a sweep killed with SIGKILL
cannot stop its server, and the server (``mlflow server`` and its uvicorn worker) would live on. The
kernel's parent-death signal wakes the guard at once on Linux; elsewhere it notices within a second.
The guard exits with CMD's status, so a caller reads CMD's exit as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from steering.sweep.workers import set_parent_death_signal

POLL_S = 1.0
GRACE_S = 5.0


def guard(parent: int, cmd: list[str]) -> int:
    """Run ``cmd`` until it ends or ``parent`` does; returns the status to exit with."""
    set_parent_death_signal(signal.SIGTERM)
    # SIGTERM (from the kernel when the parent died, or from LocalServer.stop) ends the group, not only us.
    signal.signal(signal.SIGTERM, lambda *_: _end_group())
    child = subprocess.Popen(cmd)
    while child.poll() is None:
        if os.getppid() != parent:
            _end_group()
        time.sleep(POLL_S)
    return child.returncode


def _end_group() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    group = os.getpgrp()
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.1)
        except ChildProcessError:  # every child has ended
            break
    os.killpg(group, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m steering.sweep.guard PID -- CMD ...", file=sys.stderr)
        return 2
    return guard(int(argv[0]), argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
