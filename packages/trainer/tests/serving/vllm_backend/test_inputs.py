"""What reaches vLLM: engine arguments, prompts with checked image refs, sampling settings, and outputs back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoProcessor

pytest.importorskip("vllm")

from vllm import RequestOutput
from vllm.config import VllmConfig
from vllm.logprobs import FlatLogprobs, Logprob
from vllm.outputs import CompletionOutput
from vllm.renderers import renderer_from_config
from vllm.sampling_params import RequestOutputKind

from foveal.configs import MultimodalConfig
from foveal.renderers.contract import encode_mmraw
from foveal.renderers.errors import (
    BadRefEncoding,
    FingerprintMismatch,
    HashMismatch,
    PlaceholderMismatch,
)
from foveal.renderers.inference.wire import SamplingParams as WireSampling
from foveal.renderers.rendering import Renderer
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.serving.backends.vllm.backend import VLLMBackend
from foveal.trainer.serving.backends.vllm.mm_inputs import ImageChecks, check_expansion, engine_prompt
from foveal.trainer.serving.backends.vllm.sampling import completions, engine_sampling
from foveal.trainer.serving.backends.vllm.worker_extension import WORKER_EXTENSION
from foveal.trainer.serving.engine.requests import Aborted, EngineError
from foveal.trainer.serving.errors import RequestError
from foveal.trainer.model.loading import ModelLoadError

from .support import (
    STOP,
    TEXT,
    VLM,
    ScriptedEngine,
    image_prompt,
    picture,
    refs,
    serve_config,
    vllm_config,
)

# -- imports ---------------------------------------------------------------------------------------------


def test_importing_the_inference_packages_never_imports_vllm() -> None:
    """vllm is installed here, so this fails if any of these packages imports it eagerly."""
    code = (
        "import sys, foveal.trainer.serving, foveal.trainer.serving.backends, "
        "foveal.trainer.serving.backends.vllm; "
        "assert 'vllm' not in sys.modules, sorted(m for m in sys.modules if m.startswith('vllm'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- engine arguments ------------------------------------------------------------------------------------


def test_engine_arguments_pin_what_changes_a_requests_meaning(
    tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    config = serve_config(tmp_path, VLM, max_batch_size=3, max_model_len=384)
    folder = tiny_model_dir(VLM)
    built = vllm_config(config, folder, max_pixels=50_000)
    layout = image_adapter("qwen2_vl", AutoProcessor.from_pretrained(folder), MultimodalConfig(max_pixels=50_000)).spec
    assert built.model_config.model == str(folder)
    assert built.model_config.logprobs_mode == "raw_logprobs"
    assert built.model_config.max_model_len == 384
    assert built.scheduler_config.max_num_seqs == 3
    assert built.scheduler_config.max_num_queued_reqs == 3 + config.inference.max_queued_requests
    assert built.cache_config.enable_prefix_caching
    assert built.parallel_config.worker_extension_cls == WORKER_EXTENSION
    assert built.parallel_config.tensor_parallel_size == built.parallel_config.data_parallel_size == 1
    assert built.weight_transfer_config is not None and built.weight_transfer_config.backend == "nccl"
    multimodal = built.model_config.multimodal_config
    assert multimodal.mm_processor_kwargs == {"size": {"shortest_edge": layout.min_pixels, "longest_edge": 50_000}}
    assert multimodal.get_limit_per_prompt("image") == config.renderer.max_images_per_sample
    assert multimodal.get_limit_per_prompt("video") == 0


def test_a_trainer_checkpoint_folder_is_not_handed_to_vllms_loader(
    tmp_path: Path, tiny_model_dir: Callable[[str], Path], vlm_config: VllmConfig
) -> None:
    """vLLM would read its optimizer.safetensors as weights; the way around is named instead."""
    folder = tmp_path / "step-00000002"
    shutil.copytree(tiny_model_dir(TEXT), folder)
    save_file({"state/model.norm.weight/exp_avg": torch.zeros(3)}, folder / "optimizer.safetensors")
    config = serve_config(tmp_path, TEXT, name_or_path=str(folder))
    with pytest.raises(ModelLoadError, match=r"optimizer\.safetensors") as caught:
        VLLMBackend(config, engine=ScriptedEngine(vlm_config))
    assert caught.value.field == "model.name_or_path"


# -- prompts with images: our checks, then vLLM's own input renderer ---------------------------------------


def render_in_vllm(config: VllmConfig, prompt: dict[str, Any]) -> dict[str, Any]:
    (engine_input,) = renderer_from_config(config).render_cmpl([prompt])
    return engine_input


def test_vllm_expands_the_collapsed_prompt_back_to_the_requests_tokens(
    client_renderer: Renderer, checks: ImageChecks, vlm_config: VllmConfig
) -> None:
    rendered = image_prompt(client_renderer, picture(120, 90, 1), picture(64, 200, 2))
    prepared = engine_prompt(rendered.token_ids, refs(rendered), checks)
    pad = checks.adapter.image_token_id
    assert prepared.expanded_ids == rendered.token_ids
    assert prepared.prompt["prompt_token_ids"].count(pad) == 2
    assert len(prepared.prompt["prompt_token_ids"]) == len(rendered.token_ids) - sum(
        i.length - 1 for i in rendered.images
    )
    engine_input = render_in_vllm(vlm_config, prepared.prompt)
    assert engine_input["prompt_token_ids"] == list(rendered.token_ids)
    check_expansion(engine_input["prompt_token_ids"], prepared.expanded_ids)
    assert engine_input["mm_hashes"]["image"] == [image.descriptor.hash for image in rendered.images]
    spans = [(p.offset, p.length) for p in engine_input["mm_placeholders"]["image"]]
    assert spans == [(image.offset, image.length) for image in rendered.images]


def test_vllm_with_other_pixel_bounds_is_caught_before_sampling(
    vlm_root: Path, client_renderer: Renderer, checks: ImageChecks, tiny_model_dir: Callable[[str], Path]
) -> None:
    """If the engine's processor ever resized differently, the expanded prompt would not be the request's."""
    other = vllm_config(serve_config(vlm_root, VLM), tiny_model_dir(VLM), max_pixels=20_000)
    rendered = image_prompt(client_renderer, picture(400, 300, 3))
    prepared = engine_prompt(rendered.token_ids, refs(rendered), checks)
    with pytest.raises(EngineError, match="disagrees with the layout"):
        check_expansion(render_in_vllm(other, prepared.prompt)["prompt_token_ids"], prepared.expanded_ids)


def test_a_text_prompt_goes_to_vllm_unchanged(client_renderer: Renderer, checks: ImageChecks) -> None:
    prepared = engine_prompt((1, 2, 3), (), checks)
    assert prepared.prompt == {"prompt_token_ids": [1, 2, 3]}
    with pytest.raises(PlaceholderMismatch) as stray:
        engine_prompt((1, checks.adapter.image_token_id, 3), (), checks)
    assert stray.value.field == "prompt_token_ids"
    rendered = image_prompt(client_renderer, picture(64, 64, 8))
    with pytest.raises(RequestError, match="text-only") as caught:
        engine_prompt((1, 2, 3), refs(rendered), None)
    assert caught.value.field == "image_refs"


def test_refs_that_disagree_with_the_prompt_or_the_server_are_refused_by_field(
    client_renderer: Renderer, checks: ImageChecks
) -> None:
    rendered = image_prompt(client_renderer, picture(120, 90, 4))
    ids, (ref,) = list(rendered.token_ids), refs(rendered)
    image = rendered.images[0]
    end = image.offset + image.length
    cases = {
        "image_refs[0]": (ids, ["mmraw:not base64!"], BadRefEncoding),
        "image_refs[0].payload.num_placeholder_tokens": (
            ids[: image.offset + 1] + ids[end:],
            [ref],
            PlaceholderMismatch,
        ),
        "prompt_token_ids": (
            [*ids[: image.offset], checks.adapter.image_token_id, *ids[image.offset :]],
            [ref],
            PlaceholderMismatch,
        ),
    }
    cases["image_refs[1]"] = (ids, [ref, ref], PlaceholderMismatch)
    for field, (prompt, image_refs, error) in cases.items():
        with pytest.raises(error) as caught:
            engine_prompt(prompt, image_refs, checks)
        assert caught.value.field == field
    descriptor = image.descriptor.model_copy(update={"layout_fingerprint": "0" * 16})
    with pytest.raises(FingerprintMismatch) as caught:
        engine_prompt(ids, [encode_mmraw(descriptor)], checks)
    assert caught.value.field == "image_refs[0].layout_fingerprint"


def test_a_tampered_image_is_refused(client_renderer: Renderer, checks: ImageChecks) -> None:
    rendered = image_prompt(client_renderer, picture(96, 96, 5))
    stored = checks.store.path_for(rendered.images[0].descriptor.hash)
    original = stored.read_bytes()
    try:
        stored.write_bytes(original[:-8] + bytes(8))
        with pytest.raises(HashMismatch) as caught:
            engine_prompt(rendered.token_ids, refs(rendered), checks)
        assert caught.value.field == "image_refs[0].hash"
    finally:
        stored.write_bytes(original)


# -- sampling settings and outputs, with vLLM's own classes -------------------------------------------------


def test_sampling_settings_become_vllms() -> None:
    wire = WireSampling(
        temperature=0.7, top_p=0.9, top_k=20, max_tokens=12, stop=("END",), stop_token_ids=(4,), seed=3, n=4
    )
    params = engine_sampling(wire, server_stop_ids=(STOP, 4))
    assert (params.n, params.temperature, params.top_p, params.top_k) == (4, 0.7, 0.9, 20)
    assert (params.max_tokens, params.seed) == (12, 3)
    assert params.stop == ["END"] and params.include_stop_str_in_output and params.detokenize
    assert params.stop_token_ids == [STOP, 4] and not params.ignore_eos
    assert params.logprobs == 0 and not params.skip_special_tokens
    assert params.output_kind == RequestOutputKind.FINAL_ONLY
    free_running = engine_sampling(WireSampling(ignore_eos=True, stop_token_ids=(4,), logprobs=False), (STOP,))
    assert free_running.ignore_eos and free_running.stop_token_ids == [4]
    assert free_running.logprobs is None and not free_running.detokenize
    assert engine_sampling(WireSampling(temperature=0.0, n=3), (STOP,)).n == 1  # vLLM refuses greedy n > 1


def request_output(*completions_: CompletionOutput, finished: bool = True) -> RequestOutput:
    return RequestOutput("r", None, [1, 2], None, list(completions_), finished=finished)


def completion(index: int, token_ids: Sequence[int], finish: str, logprobs: Any = "flat") -> CompletionOutput:
    positions = [{token: Logprob(-0.5 * (i + 1)), token + 1: Logprob(-9.0)} for i, token in enumerate(token_ids)]
    if logprobs == "flat":
        logprobs = FlatLogprobs()
        logprobs.extend(positions)
    elif logprobs == "list":
        logprobs = positions
    return CompletionOutput(index, "", list(token_ids), None, logprobs, finish_reason=finish)


def test_final_outputs_become_completions_in_sample_order() -> None:
    wire = WireSampling(n=2)
    output = request_output(completion(1, [7, STOP], "stop", "list"), completion(0, [5, 6, 7], "length"))
    first, second = completions(output, wire, decode=lambda ids: ",".join(map(str, ids)))
    assert (first.token_ids, first.logprobs, first.text) == ((5, 6, 7), (-0.5, -1.0, -1.5), "5,6,7")
    assert first.finish_reason == "length"
    assert (second.token_ids, second.logprobs, second.finish_reason) == ((7, STOP), (-0.5, -1.0), "stop")
    greedy = completions(request_output(completion(0, [5], "length")), WireSampling(temperature=0.0, n=3), str)
    assert len(greedy) == 3 and len(set(greedy)) == 1
    (without,) = completions(request_output(completion(0, [5], "length", None)), WireSampling(logprobs=False), str)
    assert without.logprobs is None
    assert first.top_logprobs is None


def test_top_logprobs_ask_vllm_for_them_and_come_back_per_token_best_first() -> None:
    wire = WireSampling(top_logprobs=2)
    assert engine_sampling(wire, (STOP,)).logprobs == 2
    (answer,) = completions(request_output(completion(0, [5, 6], "length")), wire, str)
    assert answer.top_logprobs == (((5, -0.5), (6, -9.0)), ((6, -1.0), (7, -9.0)))


def test_an_aborted_completion_is_a_retryable_503() -> None:
    with pytest.raises(Aborted) as caught:
        completions(request_output(completion(0, [5], "abort")), WireSampling(), str)
    assert (caught.value.code, caught.value.http_status) == ("aborted", 503)


@pytest.mark.parametrize(
    ("output", "wire", "message"),
    [
        (request_output(completion(0, [5], "stop")), WireSampling(n=2), "1 of 2 completions"),
        (request_output(completion(0, [5], "stop"), finished=False), WireSampling(), "finished=False"),
        (request_output(completion(0, [5], "stop", None)), WireSampling(), "logprobs for none of 1"),
        (request_output(completion(0, [5], "repetition")), WireSampling(), "finish reason 'repetition'"),
    ],
    ids=["missing-sample", "unfinished", "no-logprobs", "unknown-finish"],
)
def test_outputs_vllm_should_not_produce_are_internal_errors(
    output: RequestOutput, wire: WireSampling, message: str
) -> None:
    with pytest.raises(EngineError, match=message) as caught:
        completions(output, wire, str)
    assert caught.value.http_status == 500
