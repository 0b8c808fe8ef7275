"""foveal-verifiers must stay installable without torch: environments run in light rollout workers."""

from __future__ import annotations

import subprocess
import sys


def test_importing_verifiers_loads_neither_torch_nor_the_trainer() -> None:
    probe = (
        "import sys, foveal.verifiers, foveal.renderers, foveal.configs; "
        "import foveal.verifiers.eval.command; "
        "[getattr(foveal.verifiers, name) for name in foveal.verifiers.__all__]; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'vllm'} "
        "or m.startswith('foveal.trainer')); print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"heavy modules imported: {result.stdout.strip()}"
