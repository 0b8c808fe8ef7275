"""`TokenPolicy`: sampling in token space, the path RL trains on.

The renderer writes the prompt ids (placeholders expanded, one `mmraw:` ref per image), the server
samples ids and their logprobs, and `append_completion` keeps those ids verbatim while parsing the reply
(content, tool calls). Environment messages are joined with `bridge`, which never rewrites an earlier
token, so every turn's prompt starts with the previous turn's ids and the episode is one exact sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

from foveal.renderers.contract import encode_mmraw
from foveal.renderers.inference.wire import GenerateRequest, SamplingParams
from foveal.renderers.messages import AssistantMessage, Message, ToolSpec
from foveal.renderers.rendering import RenderedConversation, Renderer

from foveal.verifiers.policy import InferenceClient, PolicyError
from foveal.verifiers.rollout import RolloutImage, Turn


class TokenPolicy:
    """Renders with `renderer` and samples with `client`; `max_context` is the server's max_model_len."""

    def __init__(self, renderer: Renderer, client: InferenceClient, *, max_context: int | None = None) -> None:
        self.renderer = renderer
        self.client = client
        self.store = renderer.images.store
        self.max_context = max_context

    def open(self, prompt: Sequence[Message], tools: Sequence[ToolSpec], session_id: str) -> TokenEpisode:
        rendered = self.renderer.render(prompt, tools, add_generation_prompt=True)
        return TokenEpisode(self, rendered, session_id)


class TokenEpisode:
    """One conversation as a growing `RenderedConversation`, and where in it the policy sampled."""

    def __init__(self, policy: TokenPolicy, rendered: RenderedConversation, session_id: str) -> None:
        self._policy = policy
        self._rendered = rendered
        self._session_id = session_id
        self._sampled: list[tuple[int, int]] = []

    @property
    def length(self) -> int:
        return len(self._rendered)

    async def sample(self, sampling: SamplingParams) -> tuple[Turn, AssistantMessage]:
        prompt = self._rendered
        images = prompt.images
        request = GenerateRequest(
            prompt_token_ids=prompt.token_ids,
            image_refs=tuple(encode_mmraw(image.descriptor) for image in prompt.images),
            sampling=sampling.model_copy(update={"n": 1}),
        )
        response = await self._policy.client.generate(request, session_id=self._session_id)
        if len(response.completions) != 1:
            raise PolicyError("response.completions", f"<{len(response.completions)} completions>", "exactly one")
        completion = response.completions[0]
        self._rendered = self._policy.renderer.append_completion(prompt, completion.token_ids)
        self._sampled.append((len(prompt.token_ids), len(completion.token_ids)))
        turn = Turn(
            prompt_ids=prompt.token_ids,
            images=tuple(RolloutImage(descriptor=i.descriptor, offset=i.offset, length=i.length) for i in images),
            completion_ids=completion.token_ids,
            completion_logprobs=completion.logprobs,
            loss_mask=self._mask(len(self._rendered)),
            text=completion.text,
            finish_reason=completion.finish_reason,
            weight_version=response.weight_version,
        )
        reply = self._rendered.messages[-1]
        assert isinstance(reply, AssistantMessage)  # append_completion always ends with the parsed reply
        return turn, reply

    def extend(self, messages: Sequence[Message]) -> None:
        self._rendered = self._policy.renderer.bridge(self._rendered, messages, add_generation_prompt=True)

    def _mask(self, length: int) -> tuple[int, ...]:
        """1 at every token sampled so far in this episode, 0 at everything the template or environment wrote."""
        mask = [0] * length
        for start, count in self._sampled:
            mask[start : start + count] = [1] * count
        return tuple(mask)
