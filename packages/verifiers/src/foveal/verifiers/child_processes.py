"""Child processes that do not outlive the process that started them.

`die_with_parent` runs in the child between fork and exec (`subprocess.Popen(preexec_fn=...)`) and asks Linux to
send it SIGTERM when its parent dies (`prctl(PR_SET_PDEATHSIG)`), however the parent dies: SIGKILL included, which
no `finally` or `atexit` in the parent can catch. Elsewhere it does nothing; the parent's own cleanup still runs
on a normal exit. Shared by `foveal eval`'s inference server and the RL launcher's children.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM this process when its parent dies (Linux; a no-op elsewhere)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
