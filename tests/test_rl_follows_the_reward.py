"""`foveal rl` end to end moves the policy towards the rewarded reply and away from the penalized one.

The other end-to-end RL tests run on a random-weight model that never earns a reward, so every advantage is 0
and a sign error between the rewards and the optimizer passes them. Here the reward is learnable from text
alone: an environment installed for the test (a `foveal.environments` entry point, as a pip-installed package
declares it) asks "Yes or no?" and pays 1 for the reply "yes", 0 for anything else. The launcher's SFT warm-up
teaches the tiny Qwen2.5-VL both replies about equally (the rows' reference answers alternate), so each group of
rollouts mixes rewarded and unrewarded replies; then real processes run three RL steps: the inference server
samples, the orchestrator scores and publishes, the trainer steps and the servers load its checkpoints.

Afterwards, transformers alone (the processor's chat template, the model classes, no Foveal code) scores both
replies on the warm-up checkpoint (RL's starting weights) and on the last RL checkpoint: the rewarded reply's
log-probability must rise and the penalized one's fall (measured: yes -0.93 -> -0.35, no -0.50 -> -1.23; with the
trainer's backward on the negated loss, yes falls to -1.91 and no rises to -0.16). One server and no router
(`inference.max_restarts 0`) keep it near 40 s on 2 cores, process start-ups dominating.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from foveal.trainer.tiny_models import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Yes or no?"
REWARDED, PENALIZED = "yes", "no"
STEPS = 3
ENVIRONMENT = textwrap.dedent(
    f'''
    """A one-question environment whose reward is learnable from text alone: "yes" earns 1, anything else 0."""
    from foveal.verifiers.dataset import Dataset, Example
    from foveal.verifiers.environment import SingleTurnEnv
    from foveal.verifiers.rubric import Rubric

    def said_yes(completion: str) -> float:
        return float(completion.strip() == {REWARDED!r})

    def load_environment(rows: int = 64) -> SingleTurnEnv:
        # The reference answers alternate so the SFT warm-up teaches both replies; the reward ignores them.
        examples = [
            Example(example_id=f"q{{i}}", prompt=[{{"role": "user", "content": {QUESTION!r}}}],
                    answer=({REWARDED!r}, {PENALIZED!r})[i % 2])
            for i in range(rows)
        ]
        data = Dataset.from_examples(examples)
        return SingleTurnEnv(name="yes_or_no", train=data, eval=data, rubric=Rubric([said_yes]))
    '''
)


def install_environment(folder: Path) -> Path:
    """A distribution folder declaring the `yes_or_no` environment, found through sys.path like a pip install."""
    folder.mkdir()
    (folder / "foveal_env_yes_or_no.py").write_text(ENVIRONMENT)
    dist_info = folder / "foveal_env_yes_or_no-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: foveal-env-yes-or-no\nVersion: 0.1\n")
    entry_point = "yes_or_no = foveal_env_yes_or_no:load_environment"
    (dist_info / "entry_points.txt").write_text(f"[foveal.environments]\n{entry_point}\n")
    return folder


def run_foveal_rl(home: Path, model: Path, packages: Path) -> subprocess.CompletedProcess[str]:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    command = [
        script, "rl", "--no-progress", "--model.name_or_path", str(model), "--logging.run_dir", str(home / "run"),
        "--orchestrator.environments", '[{"name": "yes_or_no"}]', "--orchestrator.batch_size", "4",
        "--orchestrator.rollouts_per_prompt", "8", "--orchestrator.max_tokens", "4",
        "--orchestrator.max_async_level", "0", "--rl.max_steps", str(STEPS), "--rl.eval_examples", "0",
        "--rl.warmup_sft_steps", "40", "--rl.warmup_sft_batch_size", "8", "--rl.warmup_sft_lr", "0.01",
        "--inference.max_model_len", "64", "--inference.max_restarts", "0", "--inference.device", "cpu",
        "--trainer.device", "cpu", "--trainer.seq_len", "64", "--trainer.micro_batch_tokens", "1024",
        "--trainer.optim.lr", "0.003", "--trainer.optim.weight_decay", "0", "--trainer.schedule.kind", "constant",
    ]  # fmt: skip
    path = os.pathsep.join(filter(None, [str(packages), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": path}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def reply_logprob(weights: Path, processor_folder: Path, reply: str) -> float:
    """log p(reply, then the end of the turn | the question) under `weights`, scored by transformers alone."""
    processor = AutoProcessor.from_pretrained(processor_folder)
    model = AutoModelForImageTextToText.from_pretrained(weights, dtype=torch.float32).eval()
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}], add_generation_prompt=True, tokenize=False
    )
    conversation = processor.apply_chat_template(
        [
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": reply}]},
        ],
        tokenize=False,
    )
    assert conversation.startswith(prompt)
    prompt_ids = processor.tokenizer(prompt, add_special_tokens=False).input_ids
    ids = processor.tokenizer(conversation.rstrip("\n"), add_special_tokens=False).input_ids
    assert ids[: len(prompt_ids)] == prompt_ids and len(ids) > len(prompt_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return float(logprobs[len(prompt_ids) - 1 :].sum())


def test_rl_raises_the_rewarded_reply_and_lowers_the_penalized_one(tmp_path: Path) -> None:
    model = build_tiny_model("qwen2_5_vl", tmp_path / "tiny-cache")
    done = run_foveal_rl(tmp_path, model, install_environment(tmp_path / "site"))
    assert done.returncode == 0, done.stderr[-4000:]

    run_dir = tmp_path / "run"
    steps = [json.loads(line) for line in (run_dir / "orchestrator.jsonl").read_text().splitlines()]
    assert [row["step"] for row in steps] == list(range(1, STEPS + 1))
    assert 0 < steps[0]["reward_mean"] < 1, steps[0]  # both replies sampled: the advantages are not all 0

    start = run_dir / "warmup" / "checkpoints" / "step-00000040"
    final = run_dir / "checkpoints" / f"step-{STEPS:08d}"
    before = {reply: reply_logprob(start, model, reply) for reply in (REWARDED, PENALIZED)}
    after = {reply: reply_logprob(final, model, reply) for reply in (REWARDED, PENALIZED)}
    assert after[REWARDED] > before[REWARDED] + 0.05, (before, after)
    assert after[PENALIZED] < before[PENALIZED] - 0.05, (before, after)
