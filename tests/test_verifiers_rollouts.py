"""Environments against the real embedded server with the tiny VLM: token-space rollouts a trainer can use.

The server runs in this process on 127.0.0.1 (OS-chosen port) and shares the image store with the
renderer, as in an RL run. Nothing is scripted: replies come from the random-weight model, so the tests
check structure and agreement between the pieces (ids, refs, spans, logprobs, rewards, training samples),
never what the model says. The multi-turn tool episode uses a tiny model overfitted here, in a few
seconds, to call the tool and then answer, so the episode really runs tool call -> tool result -> answer.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from foveal.configs import LoggingConfig, ModelConfig, MultimodalConfig
from foveal.renderers.factory import load_renderer
from foveal.renderers.inference.client import RemoteInferenceClient
from foveal.renderers.inference.wire import SamplingParams
from foveal.renderers.messages import ToolMessage, UserMessage
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.mm_refs import MMRef, check_mm_refs
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server
from foveal.trainer.tiny_models import build_tiny_model
from foveal.verifiers.dataset import Dataset, Example
from foveal.verifiers.parsers import TaggedParser
from foveal.verifiers.registry import load_environment
from foveal.verifiers.rewards import exact_match
from foveal.verifiers.rollout import Rollout
from foveal.verifiers.rubric import Rubric
from foveal.verifiers.token_policy import TokenPolicy
from foveal.verifiers.tool_env import ToolEnv


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def serve(model: str, run_dir: Path, cache: Path) -> tuple[ServeConfig, RunningServer]:
    config = ServeConfig(
        model=ModelConfig(name_or_path=model),
        multimodal=MultimodalConfig(offload_dir=run_dir / "assets"),
        logging=LoggingConfig(run_dir=run_dir),
    )
    return config, start_server(config, cache_root=cache)


def policy_for(config: ServeConfig, server: RunningServer, source: Path) -> TokenPolicy:
    store = ImageStore.from_config(config.multimodal, config.logging.run_dir)
    renderer = load_renderer(source, store=store)
    return TokenPolicy(renderer, RemoteInferenceClient.for_url(server.url), max_context=config.inference.max_model_len)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenPolicy]:
    cache, run_dir = tmp_path_factory.mktemp("tiny-cache"), tmp_path_factory.mktemp("run")
    config, server = serve("tiny:qwen2_5_vl", run_dir, cache)
    try:
        yield policy_for(config, server, build_tiny_model("qwen2_5_vl", cache))
    finally:
        server.stop()


def evaluate(policy: TokenPolicy, name: str, examples: int, n: int, **sampling: float) -> list[list[Rollout]]:
    environment = load_environment(name, num_eval=examples)
    params = SamplingParams(max_tokens=12, seed=1, **sampling)

    async def run() -> list[list[Rollout]]:
        try:
            return await environment.evaluate(
                environment.dataset("eval").take(examples), policy, params, rollouts_per_example=n
            )
        finally:
            await policy.client.aclose()  # type: ignore[attr-defined]

    return asyncio.run(run())


def training_sample(rollout: Rollout, renderer: Renderer) -> TrainingSample:
    """What the RL trainer builds from a rollout: no tokenizer, no renderer, only the recorded fields."""
    sequence = rollout.sequence()
    refs = [MMRef.model_validate(image.model_dump()) for image in sequence.mm_refs]
    if renderer.image_token_id is not None:
        check_mm_refs(sequence.token_ids, refs, renderer.image_token_id, rollout.example_id)
    return TrainingSample(
        sample_id=f"{rollout.example_id}/{rollout.sample_index}",
        token_ids=sequence.token_ids,
        loss_weights=loss_weights_from_mask(sequence.loss_mask),
        inference_logprobs=sequence.inference_logprobs,
        mm_refs=tuple(refs),
    )


@pytest.mark.parametrize("environment", ["shapes", "charts"])
def test_vision_rollouts_from_the_embedded_server(vlm: TokenPolicy, environment: str) -> None:
    groups = evaluate(vlm, environment, examples=3, n=2, temperature=1.0)
    assert [len(group) for group in groups] == [2, 2, 2]
    for rollout in (r for group in groups for r in group):
        assert not rollout.errors, rollout.errors
        (turn,) = rollout.turns
        assert turn.weight_version == 0 and turn.finish_reason in ("stop", "length")
        assert 1 <= len(turn.completion_ids) <= 12 and len(turn.completion_logprobs or ()) == len(turn.completion_ids)
        assert all(math.isfinite(x) and x <= 0.0 for x in turn.completion_logprobs or ())
        assert len(turn.images) == 1 and rollout.images[0].uri == turn.images[0].descriptor.raw_image_uri
        assert rollout.reward == exact_match(rollout.last_reply(), rollout.answer)
        sample = training_sample(Rollout.model_validate_json(rollout.model_dump_json()), vlm.renderer)
        assert sum(sample.loss_weights) == len(turn.completion_ids)
    first, second = groups[0]
    assert first.turns[0].prompt_ids == second.turns[0].prompt_ids  # one prompt, two samples


def test_text_rollouts_mix_into_a_vision_run(vlm: TokenPolicy) -> None:
    groups = evaluate(vlm, "arithmetic", examples=2, n=1, temperature=0.0)
    for rollout in (r for group in groups for r in group):
        assert not rollout.errors and rollout.turns[0].images == () and rollout.images == ()
        assert training_sample(rollout, vlm.renderer).mm_refs == ()


def test_greedy_rollouts_repeat_exactly(vlm: TokenPolicy) -> None:
    first = evaluate(vlm, "shapes", examples=2, n=2, temperature=0.0)
    again = evaluate(vlm, "shapes", examples=2, n=2, temperature=0.0)
    ids = [[r.turns[0].completion_ids for r in group] for group in first]
    assert ids == [[r.turns[0].completion_ids for r in group] for group in again]
    assert all(group[0] == group[1] for group in ids)


def test_a_prompt_the_server_refuses_fails_one_rollout_not_the_run(vlm: TokenPolicy) -> None:
    environment = load_environment("arithmetic", num_eval=2)
    examples = environment.dataset("eval").take(2)
    huge = Example(example_id="huge", prompt=[UserMessage(content="word " * 3000)], answer="0")
    policy = TokenPolicy(vlm.renderer, vlm.client)  # no max_context: the server itself must refuse

    async def run() -> list[list[Rollout]]:
        try:
            return await environment.evaluate([examples[0], huge, examples[1]], policy, SamplingParams(max_tokens=4))
        finally:
            await policy.client.aclose()  # type: ignore[attr-defined]

    ok, failed, ok_too = (group[0] for group in asyncio.run(run()))
    assert not ok.errors and not ok_too.errors
    assert failed.stop_reason == "error" and failed.reward == 0.0
    assert failed.errors[0].type == "InferenceError" and "too_long" in failed.errors[0].message


# -- multi-turn tool episode ---------------------------------------------------------------------------

CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
ANSWER = "<answer>5</answer>"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tool_environment() -> ToolEnv:
    example = Example(example_id="sum", prompt=[UserMessage(content="What is 2 + 3? Use the add tool.")], answer="5")
    rubric = Rubric([exact_match], parser=TaggedParser())
    return ToolEnv(name="calc", tools=[add], eval=Dataset.from_examples([example]), rubric=rubric, max_turns=3)


def overfit_tool_model(source: Path, folder: Path) -> tuple[Path, list[int], torch.nn.Module]:
    """A copy of the tiny qwen3_vl model trained (teacher forcing) to call `add` and then answer.

    The training sequence is the episode the environment will produce: prompt, the call, the tool
    result as the template writes it, the answer. Returns the model folder, that sequence's ids and the model.
    """
    renderer = load_renderer(source)
    environment = tool_environment()
    prompt = renderer.render(environment.dataset("eval")[0].prompt, environment.tools, add_generation_prompt=True)
    stop = renderer.stop_token_ids[0]

    def encode(text: str) -> list[int]:
        return [*renderer.tokenizer(text, add_special_tokens=False)["input_ids"], stop]

    called = renderer.append_completion(prompt, encode(CALL))
    answered = renderer.append_completion(
        renderer.bridge(called, [ToolMessage(content="5", name="add")]), encode(ANSWER)
    )
    ids = torch.tensor([answered.token_ids])
    labels = torch.tensor([[t if m else -100 for t, m in zip(answered.token_ids, answered.loss_mask)]])
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    targets = labels[0, 1:]
    trained = targets != -100
    for _ in range(400):
        output = model(input_ids=ids, labels=labels)
        predicted = output.logits[0, :-1].argmax(-1)
        if bool((predicted[trained] == targets[trained]).all()) and output.loss.item() < 0.05:
            break
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    else:
        pytest.fail("the tiny model did not learn the tool episode in 400 steps")
    shutil.copytree(source, folder)
    model.save_pretrained(folder)
    return folder, list(answered.token_ids), model.eval()


def test_multi_turn_tool_episode_end_to_end(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder, episode_ids, model = overfit_tool_model(build_tiny_model("qwen3_vl", cache), tmp_path / "tool-model")
    config, server = serve(str(folder), tmp_path / "run", cache)
    try:
        policy = policy_for(config, server, folder)
        environment = tool_environment()

        async def run() -> Rollout:
            try:
                return await environment.rollout(
                    environment.dataset("eval")[0], policy, SamplingParams(temperature=0.0, max_tokens=40)
                )
            finally:
                await policy.client.aclose()

        rollout = asyncio.run(run())
    finally:
        server.stop()
    assert not rollout.errors, rollout.errors
    assert [m.role for m in rollout.completion] == ["assistant", "tool", "assistant"]
    call = rollout.completion[0].tool_calls[0]  # type: ignore[union-attr]
    assert (call.name, call.arguments) == ("add", {"a": 2, "b": 3}) and rollout.completion[1].text() == "5"
    assert rollout.reward == 1.0 and rollout.stop_reason == "done"
    assert rollout.metrics == {"turns": 2.0, "tool_calls": 1.0, "tool_errors": 0.0, "exact_match": 1.0}
    sequence = rollout.sequence()
    assert list(sequence.token_ids) == episode_ids  # the sampled episode is the one the model was taught
    sample = training_sample(rollout, policy.renderer)
    assert sum(sample.loss_weights) == sum(len(t.completion_ids) for t in rollout.turns)
    # The recorded logprobs sit at the positions of the tokens they score: the trainer's forward agrees.
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([sample.token_ids])).logits[0].float()
    recomputed = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(sample.token_ids[1:])[:, None])[:, 0]
    trained = [i for i, weight in enumerate(sample.loss_weights) if weight]
    recorded = torch.tensor([sample.inference_logprobs[i] for i in trained])  # type: ignore[index]
    assert torch.allclose(recomputed[[i - 1 for i in trained]], recorded, atol=1e-3)
