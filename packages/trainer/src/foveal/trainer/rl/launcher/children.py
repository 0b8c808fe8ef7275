"""The child processes of `foveal rl`: started with their output in a log file, watched, and stopped.

Each child is a `foveal <command> --config <file>` run by this interpreter, with stdin closed and its
stdout/stderr in `<run dir>/logs/<name>.log`. On Linux a child gets SIGTERM when the launcher dies
(`PR_SET_PDEATHSIG`), so a killed launcher does not leave servers behind. `Children.watch` returns
when the children that must finish have exited with 0, and raises `ChildFailed`, naming the child, its
exit status and the tail of its log, as soon as any child exits otherwise (a server must never exit).
Stopping sends SIGTERM to all, waits a grace period, then SIGKILLs what is left, in reverse start order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import orjson
from foveal.trainer.runs.layout import PROCESSES_FILE
from foveal.verifiers.child_processes import die_with_parent

STOP_GRACE_S = 20.0
POLL_S = 0.25


class ChildFailed(RuntimeError):
    """A child process exited when it should not have, or with a non-zero status."""


@dataclass
class Child:
    """One started process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    must_finish: bool
    """True for jobs that end (warmup, orchestrator, trainer); False for servers, which run until stopped."""

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


@dataclass
class Children:
    """The processes of one launch, recorded (name, pid, log) in `<launch dir>/processes.json`."""

    launch_dir: Path
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    started: list[Child] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], *, must_finish: bool, env: Mapping[str, str] | None = None
    ) -> Child:
        """Start `python -m foveal.configs <argv>` (or `argv` itself when it starts with the interpreter)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = list(argv) if argv[0] == sys.executable else [sys.executable, "-m", "foveal.configs", *argv]
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, **(env or {})},
                preexec_fn=die_with_parent,
            )
        child = Child(name, process, log, must_finish)
        self.started.append(child)
        self._record()
        return child

    def check(self) -> None:
        """Raise ChildFailed if any child exited badly (a server exiting at all is bad)."""
        for child in self.started:
            code = child.process.poll()
            if code is not None and (code != 0 or not child.must_finish):
                raise ChildFailed(
                    f"{child.name} (pid {child.process.pid}) exited with status {_status(code)}; "
                    f"last lines of {child.log}:\n{child.tail()}"
                )

    def watch(self, names: Sequence[str], on_tick: Callable[[], None] = lambda: None) -> None:
        """Wait until the named children have all exited with 0; any failure raises ChildFailed at once."""
        waiting = [child for child in self.started if child.name in names]
        while True:
            self.check()
            on_tick()
            if all(child.process.poll() == 0 for child in waiting):
                return
            time.sleep(POLL_S)

    def stop(self) -> None:
        """SIGTERM every live child (newest first), then SIGKILL those still alive after the grace period."""
        live = [child for child in reversed(self.started) if child.process.poll() is None]
        for child in live:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in live:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _record(self) -> None:
        rows = [{"name": c.name, "pid": c.process.pid, "log": str(c.log)} for c in self.started]
        self.launch_dir.mkdir(parents=True, exist_ok=True)
        (self.launch_dir / PROCESSES_FILE).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


def _status(code: int) -> str:
    return f"{code} (killed by {signal.Signals(-code).name})" if code < 0 else str(code)
