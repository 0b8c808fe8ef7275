"""DFlash data: chat conversations -> prompts, the target's own responses, and training samples.

Sources (`dflash.dataset`):
  - `tiny:mixed` (or `mixed:<count>`): generated shapes chats (one image each) interleaved with text-only
    arithmetic chats, so batches mix image and text samples; its held-out set is both generators' eval split;
  - anything `foveal sft` reads (`shapes[:N]`, a JSONL file, a HF dataset): the held-out set is
    `dflash.eval_dataset`, or else the last `eval_examples` conversations, which are then left out of training.

Every conversation is rendered by the project's renderer: images only where the conversation puts them,
loss on the assistant tokens. With `dflash.responses = "target"` (the default, and how DFlash drafts are
trained: self-distillation) the last assistant turn is dropped and regenerated greedily by the target, so
the draft learns exactly the continuations greedy verification will accept; the sample is the prompt plus
that response, with loss on the response. `"dataset"` keeps the written assistant tokens. Held-out prompts
are rendered the same way, ending with the generation prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from foveal.renderers.messages import parse_messages
from foveal.renderers.rendering import Renderer
from foveal.trainer.data.collate import Packable
from foveal.trainer.data.samples import TrainingSample, render_sample
from foveal.trainer.dflash.regenerate import regenerate
from foveal.trainer.dflash.target import FrozenTarget
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.data.samples import sample_from_render
from foveal.trainer.data.sources import Conversation, ConversationSource, DatasetError, open_dataset
from foveal.trainer.runs.layout import demo_data_dir
from foveal.verifiers.datasets import write_shapes_dataset
from foveal.verifiers.datasets.arithmetic import generate_problem
from foveal.verifiers.environments.arithmetic import SYSTEM_PROMPT

MIXED_NAMES = ("tiny:mixed", "mixed")
MIXED_EXAMPLES = 1024


@dataclass(frozen=True)
class ArithmeticChats:
    """Text-only arithmetic conversations of one split: system, question, `<answer>N</answer>`."""

    size: int
    seed: int
    split: str

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Conversation:
        problem = generate_problem(index, seed=self.seed, split=self.split)  # type: ignore[arg-type]
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": problem.question},
            {"role": "assistant", "content": f"<answer>{problem.answer}</answer>"},
        ]
        return Conversation(problem.example_id, parse_messages(messages))


@dataclass(frozen=True)
class Interleaved:
    """Conversations of several sources taken in turn (a0, b0, a1, b1, ...), as long as the shortest allows."""

    sources: tuple[ConversationSource, ...]

    def __len__(self) -> int:
        return len(self.sources) * min(len(source) for source in self.sources)

    def __getitem__(self, index: int) -> Conversation:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.sources[index % len(self.sources)][index // len(self.sources)]


@dataclass(frozen=True)
class Window:
    """Conversations `start .. stop - 1` of a source."""

    source: ConversationSource
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> Conversation:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.source[self.start + index]


@dataclass(frozen=True)
class DFlashData:
    """Training and held-out conversations, and the folders their images may be read from."""

    train: ConversationSource
    held_out: ConversationSource
    roots: tuple[Path, ...]


def open_dflash_data(
    dataset: str, eval_dataset: str | None, train_examples: int, eval_examples: int, run_dir: Path, seed: int
) -> DFlashData:
    """The conversations named by `dflash.dataset` / `dflash.eval_dataset` (see the module docstring)."""
    if dataset in MIXED_NAMES or dataset.startswith("mixed:"):
        size = MIXED_EXAMPLES if dataset in MIXED_NAMES else _mixed_size(dataset)
        train, roots = _mixed(run_dir, size, seed, "train")
        held_out, eval_roots = _mixed(run_dir, max(eval_examples, 2), seed, "eval")
        roots = (*roots, *eval_roots)
    elif eval_dataset is not None:
        train, roots = open_dataset(dataset, run_dir, seed)
        held_out, eval_roots = open_dataset(eval_dataset, run_dir, seed)
        roots = (*roots, *eval_roots)
    else:
        source, roots = open_dataset(dataset, run_dir, seed)
        if len(source) <= eval_examples:
            raise DatasetError("dflash.eval_examples", eval_examples, f"fewer than the dataset's {len(source)} rows")
        train = Window(source, 0, len(source) - eval_examples)
        held_out = Window(source, len(source) - eval_examples, len(source))
    train = Window(train, 0, min(train_examples, len(train)))
    held_out = Window(held_out, 0, min(eval_examples, len(held_out)))
    return DFlashData(train, held_out, roots)


def prompt_of(renderer: Renderer, conversation: Conversation) -> TrainingSample:
    """The conversation up to (without) its last assistant turn, ending with the generation prompt; no loss."""
    roles = [message.role for message in conversation.messages]
    if "assistant" not in roles:
        raise DatasetError(f"conversation {conversation.sample_id!r}", roles, "at least one assistant turn")
    last = len(roles) - 1 - roles[::-1].index("assistant")
    rendered = renderer.render(conversation.messages[:last], add_generation_prompt=True)
    return sample_from_render(rendered, renderer.image_token_id, conversation.sample_id, loss_weights=None)


def with_response(prompt: TrainingSample, response: Sequence[int]) -> TrainingSample:
    """The prompt followed by `response`, loss on the response only; image spans stay where they were."""
    return prompt.model_copy(
        update={
            "token_ids": (*prompt.token_ids, *response),
            "loss_weights": (*prompt.loss_weights, *(1.0,) * len(response)),
        }
    )


@dataclass(frozen=True)
class Generation:
    """How the target answers: the longest response, and prompts per batched `generate`."""

    max_new_tokens: int
    batch_size: int


def training_samples(
    conversations: ConversationSource,
    renderer: Renderer,
    responses: str,
    target: FrozenTarget,
    materialize: Callable[[TrainingSample], Packable],
    generation: Generation,
    context: DistributedContext,
) -> dict[str, TrainingSample]:
    """Every training conversation as a TrainingSample, by sample id: regenerated by the target, or as written.

    Regeneration is batched and shared out over the ranks (`foveal.trainer.dflash.regenerate`).
    """
    chats = [conversations[index] for index in range(len(conversations))]
    if responses == "dataset":
        return {chat.sample_id: render_sample(renderer, chat) for chat in chats}
    prompts = [prompt_of(renderer, chat) for chat in chats]
    answers = regenerate(
        prompts, materialize, target, generation.max_new_tokens, renderer.stop_token_ids, generation.batch_size, context
    )
    return {prompt.sample_id: with_response(prompt, answer) for prompt, answer in zip(prompts, answers, strict=True)}


def _mixed(run_dir: Path, size: int, seed: int, split: str) -> tuple[ConversationSource, tuple[Path, ...]]:
    shapes_count, arithmetic_count = -(-size // 2), size // 2 or 1
    folder = demo_data_dir(run_dir, "shapes")
    path = write_shapes_dataset(folder, shapes_count, seed=seed, split=split)  # type: ignore[arg-type]
    shapes, roots = open_dataset(str(path), run_dir, seed)
    return Interleaved((shapes, ArithmeticChats(arithmetic_count, seed, split))), roots


def _mixed_size(dataset: str) -> int:
    count = dataset.removeprefix("mixed:")
    if not count.isdigit() or int(count) < 2:
        raise DatasetError("dflash.dataset", dataset, "'mixed:<number of examples, at least 2>'")
    return int(count)
