"""`Children`, the launcher's process table, with plain sleeping processes: restarts of a server and failures."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from foveal.trainer.rl.launcher.children import ChildFailed, Children

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def killed(children: Children, name: str) -> int:
    """SIGKILL the named child and wait until it is gone; returns its pid."""
    (child,) = [child for child in children.started if child.name == name]
    pid = child.process.pid
    os.kill(pid, signal.SIGKILL)
    child.process.wait(timeout=10)
    return pid


def test_a_server_is_restarted_until_its_restarts_are_spent(tmp_path: Path) -> None:
    said: list[str] = []
    with Children(tmp_path / "launch", tmp_path / "logs", notify=said.append) as children:
        server = children.start("server-0", SLEEP, must_finish=False, restarts=2)
        first = killed(children, "server-0")
        children.check()
        assert server.process.pid != first and server.process.poll() is None
        assert said == [f"server-0 (pid {first}) exited with status -9 (killed by SIGKILL); restart 1 of 2"]
        assert f"--- foveal rl: {said[0]} ---" in server.log.read_text()
        (row,) = json.loads((tmp_path / "launch" / "processes.json").read_text())
        assert (row["pid"], row["restarts"]) == (server.process.pid, 1)

        killed(children, "server-0")
        children.check()
        assert server.restarts == 2 and server.restarts_left == 0 and len(said) == 2
        last = killed(children, "server-0")
        with pytest.raises(ChildFailed, match=rf"server-0 \(pid {last}\) exited with status -9"):
            children.check()


def test_jobs_that_must_finish_are_never_restarted(tmp_path: Path) -> None:
    with Children(tmp_path / "launch", tmp_path / "logs") as children:
        children.start("trainer", SLEEP, must_finish=True, restarts=3)
        done = children.start("warmup", [sys.executable, "-c", "pass"], must_finish=True)
        done.process.wait(timeout=30)
        children.check()  # a job that finished with 0 is fine
        pid = killed(children, "trainer")
        with pytest.raises(ChildFailed, match=rf"trainer \(pid {pid}\) exited with status -9"):
            children.check()


def test_stop_ends_a_restarted_server_too(tmp_path: Path) -> None:
    with Children(tmp_path / "launch", tmp_path / "logs") as children:
        server = children.start("server-0", SLEEP, must_finish=False, restarts=1)
        killed(children, "server-0")
        children.check()
        restarted = server.process
    assert restarted.poll() is not None  # leaving the block stopped it (SIGTERM, then SIGKILL after the grace)
