"""The real `tinker` SDK against the service on loopback: a VLM-classifier SFT loop on shapes, sampling from
the saved weights, and the RL losses.

The loop is the user-facing example script (`examples/tinker/vlm_classifier.py`), imported from its file,
so the example is exercised by the same test that proves the service.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tinker
from tinker import types
from transformers import AutoProcessor, AutoTokenizer

from .conftest import API_KEY, RunningService

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "tinker" / "vlm_classifier.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("foveal_tinker_vlm_classifier", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_vlm_classifier_sft_loop_trains_and_the_saved_sampler_serves_the_new_weights(
    tinker_service: RunningService, example: ModuleType
) -> None:
    client = tinker.ServiceClient(base_url=tinker_service.url, api_key=API_KEY)
    base = str(tinker_service.model_dir)
    training = client.create_lora_training_client(base_model=base, rank=8, seed=0).result()
    assert training.get_info().is_lora and training.get_info().lora_rank == 8
    tokenizer = training.get_tokenizer()
    processor = AutoProcessor.from_pretrained(training.get_info().model_data.tokenizer_id)

    losses = example.train(training, tokenizer, processor, steps=12, batch_size=4, lr=3e-3)
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses

    png, label = example.shape_image(0, split="eval")
    probe = example.build_datum(tokenizer, processor, png, label)
    trained_logprobs = training.forward([probe], "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()

    saved = training.save_weights_for_sampler("shapes").result()
    assert saved.path.startswith("tinker://") and saved.path.endswith("/sampler_weights/shapes")
    sampler = client.create_sampling_client(model_path=saved.path).result()
    prompt = types.ModelInput(chunks=example.prompt_chunks(tokenizer, processor, png))
    result = sampler.sample(prompt, 2, types.SamplingParams(max_tokens=3, temperature=1.0, seed=1, stop=[])).result()
    assert [len(sequence.tokens) for sequence in result.sequences] == [3, 3]
    assert all(len(s.logprobs or []) == 3 and all(lp <= 0 for lp in s.logprobs or []) for s in result.sequences)

    last_token = int(probe.loss_fn_inputs["target_tokens"].tolist()[-1])
    full = types.ModelInput(chunks=[*probe.model_input.chunks, types.EncodedTextChunk(tokens=[last_token])])
    served = sampler.compute_logprobs(full).result()
    assert served[0] is None or math.isnan(served[0])
    # Compared on the answer tokens (the datum's targets at image positions are stand-in zeros).
    answer = np.array(probe.loss_fn_inputs["weights"].tolist()) > 0
    trained = np.array(trained_logprobs)[answer]
    assert np.allclose(np.array(served[1:])[answer], trained, atol=2e-4)

    base_sampler = client.create_sampling_client(base_model=base).result()
    base_logprobs = np.array(base_sampler.compute_logprobs(full).result()[1:])[answer]
    assert np.abs(base_logprobs - trained).max() > 0.5
    client.close("success").result()


def test_importance_sampling_and_ppo_losses_run_through_the_sdk(tinker_service: RunningService) -> None:
    client = tinker.ServiceClient(base_url=tinker_service.url, api_key=API_KEY)
    training = client.create_lora_training_client(base_model=str(tinker_service.model_dir), rank=4).result()
    tokenizer = AutoTokenizer.from_pretrained(training.get_info().model_data.tokenizer_id)
    tokens = tokenizer.encode("<|im_start|>assistant\nsquare<|im_end|>", add_special_tokens=False)
    targets = tokens[1:]
    weights = [1.0] * len(targets)
    sft = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs={"target_tokens": targets, "weights": weights}
    )
    current = training.forward([sft], "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()
    # Sampling logprobs equal to the current ones: ratio 1, so both losses are -sum(advantages).
    advantages = [0.5] * len(targets)
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": targets, "logprobs": current, "advantages": advantages},
    )
    for loss_fn in ("importance_sampling", "ppo"):
        result = training.forward_backward([datum], loss_fn).result()
        assert result.metrics["loss:sum"] == pytest.approx(-sum(advantages), rel=1e-4)
        assert np.allclose(result.loss_fn_outputs[0]["logprobs"].tolist(), current, atol=1e-5)
    step = training.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert step.metrics is not None and step.metrics["grad_norm"] > 0
    client.close("success").result()
