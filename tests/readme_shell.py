"""The shell commands a Markdown file shows, and running one as a test does (tests/test_readme_commands.py).

A command is a line of a bash/sh/shell/console code block; in any other code block (fenced or indented), a line
that starts with a known program; in prose, an inline `code span` that starts with a known program other than
bare `foveal` (prose names subcommands that way) and has an argument. Trailing `# comments` are dropped and runs
of whitespace become one space, so the text is a stable key.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

SHELL_BLOCKS = {"bash", "sh", "shell", "console", "zsh"}
PROGRAMS = {"uv", "python", "python3", "pip", "bash", "sh", "curl", "torchrun", "foveal", "sbatch", "srun"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^`\s]*)")
LISTENING = re.compile(r"on http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class ReadmeCommand:
    file: str
    line: int
    text: str
    """The command as shown, its trailing comment dropped and runs of whitespace made one space."""


def strip_comment(line: str) -> str:
    """The line without a shell comment (an unquoted `#` at the start or after whitespace)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def is_command(text: str, programs: set[str]) -> bool:
    """Whether `text` runs one of `programs` (after VAR=value prefixes); a bare `torchrun` or `uv run` names the
    tool in prose."""
    try:
        tokens = shlex.split(text)
    except ValueError:
        return False
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    if len(tokens) < 2 or tokens[0] not in programs:
        return False
    return not (tokens[:2] == ["uv", "run"] and all(token.startswith("-") for token in tokens[2:]))


def readme_commands(path: Path, root: Path) -> list[ReadmeCommand]:
    """Every shell command shown in one Markdown file, named relative to `root`."""
    name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    found: list[ReadmeCommand] = []
    fence, shell, pending, pending_line = None, False, "", 0

    def add(number: int, text: str) -> None:
        found.append(ReadmeCommand(name, number, " ".join(text.split())))

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1).startswith(fence) and not line.strip()[len(opening.group(1)) :].strip():
                fence = None
                continue
            text = strip_comment(line.strip().removeprefix("$ ")).strip() if shell else line.strip()
            if pending:  # a command continued with a trailing backslash
                pending += " " + text.removesuffix("\\")
                if not text.endswith("\\"):
                    add(pending_line, pending)
                    pending = ""
            elif text and (shell or is_command(strip_comment(text), PROGRAMS)):
                if text.endswith("\\"):
                    pending, pending_line = text.removesuffix("\\"), number
                else:
                    add(number, strip_comment(text))
            continue
        if opening:
            fence, shell = opening.group(1), opening.group(2).lower() in SHELL_BLOCKS
            continue
        if line.startswith("    ") and line.strip() and is_command(strip_comment(line.strip()), PROGRAMS):
            add(number, strip_comment(line.strip()))  # an indented code block (examples/tinker/README.md)
        elif not line.startswith("    "):
            for span in re.findall(r"`([^`\n]+)`", line):
                if is_command(span, PROGRAMS - {"foveal"}):
                    add(number, span)
    return found


def to_argv(text: str) -> tuple[dict[str, str], list[str]]:
    """The environment and argv of one command: `uv run [--locked]` dropped (the workspace venv is this
    interpreter's), `foveal` its console script next to sys.executable, `python` this interpreter."""
    tokens = shlex.split(text)
    env = {}
    while ENV_ASSIGNMENT.match(tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    assert tokens[:2] == ["uv", "run"], text
    tokens = tokens[2:]
    while tokens[0] == "--locked":
        tokens.pop(0)
    assert not tokens[0].startswith("-"), f"a uv run option this test does not know: {tokens[0]}"
    programs = {"foveal": shutil.which("foveal", path=str(Path(sys.executable).parent)), "python": sys.executable}
    assert programs.get(tokens[0]), f"{tokens[0]} is not installed next to {sys.executable}"
    return env, [str(programs[tokens[0]]), *tokens[1:]]


def with_flags(argv: list[str], flags: dict[str, str]) -> list[str]:
    """`argv` with each flag's value replaced where the command gives it, else appended."""
    out = list(argv)
    for flag, value in flags.items():
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def rebound(argv: list[str], ports: dict[int, int]) -> list[str]:
    """`argv` with fixed loopback ports (the README's) replaced by the ports the servers here got."""
    out = []
    for arg in argv:
        for fixed, free in ports.items():
            arg = arg.replace(f"http://127.0.0.1:{fixed}", f"http://127.0.0.1:{free}")
        out.append(arg)
    return out


def run_command(
    home: Path, env: dict[str, str], argv: list[str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run to the end with HOME=`home` (the tiny-model cache); a non-zero exit fails with the output's tail."""
    full_env = {**os.environ, "HOME": str(home), **env}
    done = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@dataclass
class Background:
    """A server command running in the background; its port is read from the `on http://127.0.0.1:PORT` line
    it prints (started with port 0, the OS picks a free one)."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @classmethod
    def start(cls, home: Path, env: dict[str, str], argv: list[str], cwd: Path, log: Path) -> Background:
        full_env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1", **env}
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        return cls(process, log)

    def wait_until_healthy(self, path: str, headers: dict[str, str] | None = None, limit_s: float = 180) -> str:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
            found = LISTENING.search(self.log.read_text())
            if found:
                self.url = f"http://127.0.0.1:{found.group(1)}"
                try:
                    if httpx.get(self.url + path, headers=headers, timeout=2).status_code == 200:
                        return self.url
                except httpx.TransportError:
                    pass  # bound, not answering yet
            time.sleep(0.3)
        raise AssertionError(f"not healthy within {limit_s} s:\n{self.log.read_text()[-3000:]}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; killed if it has not exited 30 s later."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
