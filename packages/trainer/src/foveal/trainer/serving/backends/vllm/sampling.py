"""Our wire sampling settings -> vLLM's `SamplingParams`, and vLLM's final `RequestOutput` -> our completions.

The settings mean what they mean on the transformers backend: the server's stop tokens (the model's end tokens
and the renderer's end-of-turn tokens) end a completion unless `ignore_eos`; a stop string ends it with the
token that completed it kept in the ids; logprobs are those of the sampled tokens under the raw model
distribution, before temperature or top-k/top-p (`logprobs_mode="raw_logprobs"`, pinned in
`launch.engine_args`), with each position's `top_logprobs` most likely tokens when asked (`logprobs`);
completion text is decoded by the caller with special tokens kept. Only the final output is requested
(`FINAL_ONLY`), so `n` completions arrive together in one `RequestOutput`. vLLM refuses `n > 1` with greedy
sampling; greedy completions are all the argmax path, so one is sampled and repeated `n` times, as the
transformers backend would produce them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vllm import RequestOutput
from vllm import SamplingParams as EngineSamplingParams
from vllm.outputs import CompletionOutput
from vllm.sampling_params import RequestOutputKind

from foveal.renderers.inference.wire import Completion, FinishReason, SamplingParams
from foveal.trainer.serving.backends.vllm.logprobs import sampled_logprobs, top_logprobs
from foveal.trainer.serving.engine.requests import Aborted, EngineError

_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def engine_sampling(params: SamplingParams, server_stop_ids: Sequence[int]) -> EngineSamplingParams:
    """vLLM's sampling parameters for one request; `server_stop_ids` are the served model's own stop tokens."""
    own_stops = () if params.ignore_eos else tuple(server_stop_ids)
    return EngineSamplingParams(
        n=engine_samples(params),
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        max_tokens=params.max_tokens,
        seed=params.seed,
        stop=list(params.stop) or None,
        stop_token_ids=list(dict.fromkeys((*own_stops, *params.stop_token_ids))),
        ignore_eos=params.ignore_eos,
        include_stop_str_in_output=True,
        logprobs=params.top_logprobs if params.logprobs else None,  # the sampled token's, and N more
        flat_logprobs=True,
        detokenize=bool(params.stop),  # vLLM matches stop strings on its own detokenized text
        skip_special_tokens=False,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def engine_samples(params: SamplingParams) -> int:
    """How many completions vLLM samples: all `n`, or one when greedy (vLLM refuses greedy `n > 1`)."""
    return params.n if params.temperature > 0 else 1


def completions(
    output: RequestOutput, params: SamplingParams, decode: Callable[[Sequence[int]], str]
) -> tuple[Completion, ...]:
    """The `n` finished completions of `output` in sample order; `Aborted` when a pause aborted them."""
    sampled = engine_samples(params)
    if not output.finished or len(output.outputs) != sampled:
        raise EngineError(f"vLLM returned {len(output.outputs)} of {sampled} completions (finished={output.finished})")
    ordered = sorted(output.outputs, key=lambda completion: completion.index)
    converted = tuple(_completion(completion, params, decode) for completion in ordered)
    return converted * (params.n // sampled)


def _completion(output: CompletionOutput, params: SamplingParams, decode: Callable[[Sequence[int]], str]) -> Completion:
    token_ids = tuple(output.token_ids)
    logprobs = sampled_logprobs(token_ids, output.logprobs) if params.logprobs else None  # checks every position
    return Completion(
        token_ids=token_ids,
        logprobs=logprobs,
        top_logprobs=top_logprobs(output.logprobs or (), params.top_logprobs) if params.top_logprobs else None,
        finish_reason=finish_reason(output.finish_reason),
        text=decode(token_ids),
    )


def finish_reason(reason: str | None) -> FinishReason:
    """vLLM's finish reason as ours: `abort` (a pause in abort mode) is a retryable 503, anything else a bug."""
    if reason == "abort":
        raise Aborted("the request was aborted by a pause; retry after resume")
    if reason not in _FINISH_REASONS:
        raise EngineError(f"vLLM ended a completion with finish reason {reason!r}")
    return _FINISH_REASONS[reason]
