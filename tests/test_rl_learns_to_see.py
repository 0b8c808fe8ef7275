"""The main job's claim, shortened: RL on `colors` teaches the tiny VLM to see, and its blind control does not.

`foveal rl --config examples/rl_tiny_colors.toml` (the README's first command) with 120 RL steps instead of 200,
evaluated before and after only, on fewer examples: the warm-up sees grey images (answer format only, vision
frozen), the seeing run then learns the colours from the pixels, and the blind control, the same job with every
image grey, stays near chance. Asserted: both runs finish; the seeing run's
final greedy eval reward beats the blind run's by more than three standard errors of the difference (and is
well above chance); the blind run stays within three standard errors of chance; the summary prints both and the
comparison plot exists. About 6 minutes on 2 cores: marked slow (CI runs it in its own step).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foveal.trainer.rl.orchestrator.evaluation import read_records

ROOT = Path(__file__).resolve().parents[1]
CHANCE = 1 / 4
STEPS = 120
SHORTENED = ("--rl.max_steps", str(STEPS), "--rl.eval_every", str(STEPS), "--rl.eval_examples", "96")


@pytest.mark.slow
def test_rl_learns_to_see_and_its_blind_control_does_not(tmp_path: Path) -> None:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    run_dir = tmp_path / "run"
    command = [script, "rl", "--config", "examples/rl_tiny_colors.toml", "--no-progress",
               "--logging.run_dir", str(run_dir), *SHORTENED]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "HOME": str(tmp_path)}, capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]

    seeing, blind = read_records(run_dir)[-1], read_records(run_dir / "blind")[-1]
    assert seeing.step == blind.step == STEPS and seeing.num_examples == blind.num_examples == 96
    margin = 3 * math.hypot(seeing.reward_stderr or 0.0, blind.reward_stderr or 0.0)
    assert seeing.reward_mean - blind.reward_mean > margin, (seeing, blind)
    assert seeing.reward_mean > CHANCE + 0.2, seeing  # not >= 0.8: a shortened run may still confuse two colours
    assert abs(blind.reward_mean - CHANCE) <= 3 * max(blind.reward_stderr or 0.0, 0.04), blind
    assert "seeing: eval colors" in done.stdout and "blind: eval colors" in done.stdout
    assert (run_dir / "seeing_vs_blind.png").is_file()
