"""`die_with_parent`: a child started with it ends when its parent is SIGKILLed (no cleanup code can run then)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import subprocess, sys, time
from foveal.verifiers.child_processes import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(300)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever reaps it; it runs nothing)."""
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "Z" not in state.split()[1]


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert _running(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60  # the child sleeps 300 s unless the kernel signals it
    while _running(child):
        assert time.monotonic() < deadline, f"child {child} outlived its killed parent"
        time.sleep(0.05)


def test_the_eval_server_is_started_to_die_with_its_parent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from foveal.configs.runs import EvalConfig
    from foveal.verifiers.child_processes import die_with_parent
    from foveal.verifiers.eval import server

    started: dict[str, object] = {}

    class Started(Exception):
        pass

    def popen(command: list[str], **options: object) -> None:  # the process boundary: record, start nothing
        started.update(options, command=command)
        raise Started

    monkeypatch.setattr(server.subprocess, "Popen", popen)
    with pytest.raises(Started):
        server.EmbeddedServer(EvalConfig(), tmp_path).__enter__()
    assert started["preexec_fn"] is die_with_parent and "serve" in started["command"]
