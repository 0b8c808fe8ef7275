"""The child processes of `foveal rl`: started with their output in a log file, watched, and stopped.

Each child is a `foveal <command> --config <file>` run by this interpreter, with stdin closed and its
stdout/stderr in `<run dir>/logs/<name>.log`. On Linux a child gets SIGTERM when the launcher dies
(`PR_SET_PDEATHSIG`), so a killed launcher does not leave servers behind. `Children.watch` returns
when the children that must finish have exited with 0, and raises `ChildFailed`, naming the child, its
exit status and the tail of its log, as soon as any child exits otherwise. A server must never exit: one
started with restarts left is started again with the same command (same port, same config, its log
continued after a marker line) and the others wait for it (the router holds their requests meanwhile);
without restarts left its exit fails the launch. Stopping sends SIGTERM to all, waits a grace period,
then SIGKILLs what is left, in reverse start order.
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
    """One started process, how it was started, and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    must_finish: bool
    """True for jobs that end (warmup, orchestrator, trainer); False for servers, which run until stopped."""
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    restarts_left: int = 0
    """Times this server is started again after it exits (jobs that must finish are never restarted)."""
    restarts: int = 0

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


@dataclass
class Children:
    """The processes of one launch, recorded (name, pid, log, restarts) in `<launch dir>/processes.json`."""

    launch_dir: Path
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    started: list[Child] = field(default_factory=list)
    notify: Callable[[str], None] = lambda message: None
    """Told of every restart, in one line (the launcher shows it)."""

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        must_finish: bool,
        env: Mapping[str, str] | None = None,
        restarts: int = 0,
    ) -> Child:
        """Start `python -m foveal.configs <argv>` (or `argv` itself when it starts with the interpreter)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = tuple(argv) if argv[0] == sys.executable else (sys.executable, "-m", "foveal.configs", *argv)
        environment = {**os.environ, **self.env, **(env or {})}
        log = self.log_dir / f"{name}.log"
        process = _spawn(command, environment, log)
        child = Child(name, process, log, must_finish, command, environment, 0 if must_finish else restarts)
        self.started.append(child)
        self._record()
        return child

    def check(self) -> None:
        """Restart a server that exited while it has restarts left; raise ChildFailed for any other bad exit."""
        for child in self.started:
            code = child.process.poll()
            if code is None or (code == 0 and child.must_finish):
                continue
            if child.restarts_left <= 0:
                raise ChildFailed(
                    f"{child.name} (pid {child.process.pid}) exited with status {_status(code)}; "
                    f"last lines of {child.log}:\n{child.tail()}"
                )
            self._restart(child, code)

    def _restart(self, child: Child, code: int) -> None:
        child.restarts, child.restarts_left = child.restarts + 1, child.restarts_left - 1
        total = child.restarts + child.restarts_left
        exited = f"{child.name} (pid {child.process.pid}) exited with status {_status(code)}"
        event = f"{exited}; restart {child.restarts} of {total}"
        with child.log.open("ab") as handle:
            handle.write(f"\n--- foveal rl: {event} ---\n".encode())
        child.process = _spawn(child.command, child.env, child.log)
        self._record()
        self.notify(event)

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
        rows = [{"name": c.name, "pid": c.process.pid, "log": str(c.log), "restarts": c.restarts} for c in self.started]
        self.launch_dir.mkdir(parents=True, exist_ok=True)
        (self.launch_dir / PROCESSES_FILE).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


def _spawn(command: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `command` with stdin closed and its output appended to `log`; it dies with this process."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
        )


def _status(code: int) -> str:
    return f"{code} (killed by {signal.Signals(-code).name})" if code < 0 else str(code)
