"""The Renderer: typed messages -> exact token ids, loss mask and image refs, for one chat family.

Hand-written families describe their template as pieces (families/*.py); the renderer resolves images
through the store and the layout math, tokenizes text between added tokens with cached encodings, and
writes placeholder runs by id, so no chat template or HF processor runs at render time. The same
machinery extends conversations for RL (`append_completion`, `bridge`) without re-tokenizing what the
model sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from foveal.renderers.chunks import ModelInput, render_chunks, to_model_input
from foveal.renderers.families.assembly import Assembled, assemble
from foveal.renderers.families.base import FamilyAdapter
from foveal.renderers.families.completion import parse_assistant_text
from foveal.renderers.families.encoding import SegmentEncoder
from foveal.renderers.families.image_refs import ImageResolver
from foveal.renderers.families.pieces import ImageSlot, Piece, Text, Token
from foveal.renderers.families.spans import check_spans
from foveal.renderers.messages import AssistantMessage, InvalidMessage, Message, ToolSpec, parse_messages, parse_tools
from foveal.renderers.rendered import RenderedConversation, RenderedImage

if TYPE_CHECKING:
    from foveal.configs.multimodal import MultimodalConfig

    from foveal.renderers.layout import AnyLayoutSpec
    from foveal.renderers.store import ImageStore

LossOn = Literal["assistant", "all", "last_assistant"]
MaskRule = Callable[[Text | Token], bool]


@dataclass
class _Rendered:
    """An assembled stretch plus the descriptors of the images in it, before it is joined to a prefix."""

    ids: list[int]
    mask: list[int]
    images: list[RenderedImage] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    """The message index of each token (see `RenderedConversation.message_indices`)."""
    content: list[int] = field(default_factory=list)
    """1 where the message itself wrote the token (see `RenderedConversation.content_mask`)."""


class Renderer:
    """Renders conversations for one family; build it with `Renderer.from_pretrained`.

        renderer = Renderer.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct", store=store)
        prompt = renderer.render(messages, add_generation_prompt=True)     # SFT sample or RL prompt
        turn = renderer.append_completion(prompt, sampled_ids)            # sampled ids kept verbatim
        reply = turn.messages[-1]                                         # parsed: content, tool calls
        prompt = renderer.bridge(turn, [tool_result_message])             # next prompt, exact prefix
    """

    def __init__(
        self,
        adapter: FamilyAdapter,
        tokenizer: Any,
        images: ImageResolver,
        *,
        loss_on: LossOn = "assistant",
        max_images: int | None = None,
    ) -> None:
        """`tokenizer` is the HF tokenizer users load (AutoTokenizer); only its fast backend is used."""
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.images = images
        self.loss_on = loss_on
        self.max_images = max_images
        self._encoder = SegmentEncoder(tokenizer.backend_tokenizer)
        self._image_token_id = self._optional_id(adapter.image_token)
        self._reserved = frozenset(i for t in adapter.reserved_tokens if (i := self._optional_id(t)) is not None)
        self.stop_token_ids: tuple[int, ...] = tuple(
            i for t in adapter.stop_tokens if (i := self._optional_id(t)) is not None
        )
        markers = adapter.vision_markers
        self._markers = (
            None if markers is None else (self._encoder.token_id(markers[0]), self._encoder.token_id(markers[1]))
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        store: ImageStore | None = None,
        family: str | None = None,
        loss_on: LossOn = "assistant",
        layout_spec: AnyLayoutSpec | None = None,
        multimodal: MultimodalConfig | None = None,
        max_images: int | None = None,
        enable_thinking: bool | None = None,
    ) -> Renderer:
        """A renderer for the model at `name_or_path` (folder, hub name, or `tiny:<family>`); see `pretrained`."""
        from foveal.renderers.pretrained import load_pretrained  # jinja2 and transformers: only when loading

        parts = load_pretrained(
            name_or_path,
            store=store,
            family=family,
            layout_spec=layout_spec,
            multimodal=multimodal,
            enable_thinking=enable_thinking,
        )
        return cls(parts.adapter, parts.tokenizer, parts.images, loss_on=loss_on, max_images=max_images)

    @property
    def family(self) -> str:
        return self.adapter.name

    @property
    def image_token_id(self) -> int | None:
        """The placeholder token each image is expanded into (None for text-only tokenizers)."""
        return self._image_token_id

    @property
    def vision_marker_ids(self) -> tuple[int, int] | None:
        """The ids framing every placeholder run, for families whose template writes them."""
        return self._markers

    @property
    def prefix_stable(self) -> bool:
        """Whether a longer conversation always renders the shorter one's text first (see `prefix_note`)."""
        return self.adapter.prefix_stable

    @property
    def prefix_note(self) -> str:
        return self.adapter.prefix_note

    def render(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        *,
        loss_on: LossOn | None = None,
    ) -> RenderedConversation:
        """Token ids as `apply_chat_template` + the HF processor would give, plus loss mask and image spans."""
        typed, specs = self._validated(messages, tools)
        pieces, parts = self._write(typed, specs, add_generation_prompt)
        rule = _mask_rule(loss_on or self.loss_on, typed)
        out = self._assemble(pieces, parts, rule, offset=0)
        return self._finish(out, typed, specs, add_generation_prompt)

    def template_text(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
    ) -> str:
        """The string the family's chat template renders (one image token per image), without tokenizing."""
        typed, specs = self._validated(messages, tools)
        pieces, _ = self._write(typed, specs, add_generation_prompt)
        return self.adapter.template_text(pieces)

    def parse_completion(self, token_ids: Sequence[int]) -> AssistantMessage:
        """The assistant message in sampled ids: cut at the first stop token (if any), then parsed."""
        ids = list(token_ids)
        stops = [ids.index(s) for s in self.stop_token_ids if s in ids]
        text = self._encoder.decode(ids[: min(stops)] if stops else ids)
        return parse_assistant_text(text, self.adapter.completion)

    def append_completion(
        self, prompt: RenderedConversation, completion_ids: Sequence[int], message: AssistantMessage | None = None
    ) -> RenderedConversation:
        """The prompt followed by the sampled ids verbatim (all trained); `message` defaults to their parse."""
        if not prompt.awaiting_completion:
            raise InvalidMessage("prompt.awaiting_completion", False, "a prompt rendered with add_generation_prompt")
        reply = message if message is not None else self.parse_completion(completion_ids)
        owner = len(prompt.messages)
        count = len(completion_ids)
        content = [1] * count
        if count and completion_ids[-1] in self.stop_token_ids:
            content[-1] = 0  # the stop token closes the turn: template, as in a render
        sampled = _Rendered(list(completion_ids), [1] * count, [], [owner] * count, content)
        return self._extend(prompt, sampled, (reply,), False, self.loss_on)

    def bridge(
        self,
        previous: RenderedConversation,
        new_messages: Sequence[Message | Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        loss_on: LossOn | None = None,
    ) -> RenderedConversation:
        """`previous` verbatim, then the tokens the template writes for `new_messages` (exact prefix).

        The last previous turn is closed the way the template closes it: after a sampled stop token only
        the separator follows; a completion cut off without one gets `<|im_end|>` (untrained) first.
        """
        if previous.awaiting_completion:
            raise InvalidMessage("previous.awaiting_completion", True, "a finished turn: call append_completion first")
        new, _ = self._validated(new_messages, None)
        if not new:
            raise InvalidMessage("new_messages", [], "at least one message")
        typed = previous.messages + new
        pieces, parts = self._write(typed, previous.tools, add_generation_prompt)
        first_new = len(previous.messages)
        joint = self._joint(previous, [p for p in pieces if p.message == first_new - 1])
        fresh = [p for p in pieces if p.message >= first_new]
        offset = len(previous.token_ids) + len(joint)
        mode = loss_on or self.loss_on
        out = self._assemble(fresh, parts, _mask_rule(mode, typed), offset)
        owners = [first_new - 1] * len(joint) + out.owners  # the joint closes the previous last turn
        content = [0] * len(joint) + out.content
        closed = _Rendered(joint + out.ids, [0] * len(joint) + out.mask, out.images, owners, content)
        return self._extend(previous, closed, new, add_generation_prompt, mode)

    def bridge_exact(
        self,
        previous: RenderedConversation,
        new_messages: Sequence[Message | Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        loss_on: LossOn | None = None,
    ) -> RenderedConversation | None:
        """`bridge`, only where it is provably what a full render of the whole conversation writes; else None.

        None means "cannot prove": a full render of the same messages differs token for token (sampled ids
        that re-tokenize differently, reasoning or tool grouping the template rewrites, a cut-off reply).
        Callers that need the canonical sequence then re-render; `bridge` keeps the sampled ids instead,
        which is what RL trains on (their logprobs belong to exactly those ids).
        """
        bridged = self.bridge(previous, new_messages, add_generation_prompt, loss_on=loss_on)
        full = self.render(bridged.messages, bridged.tools, add_generation_prompt, loss_on=loss_on)
        return bridged if full.token_ids == bridged.token_ids else None

    def render_model_input(self, model_input: ModelInput) -> RenderedConversation:
        """Token ids, descriptors and spans for a Tinker-shaped ModelInput (loss mask all zero)."""
        ids, images = render_chunks(model_input, self)
        zeros = [0] * len(ids)
        return self._finish(_Rendered(ids, zeros, images, [-1] * len(ids), list(zeros)), (), (), False)

    def to_model_input(self, rendered: RenderedConversation) -> ModelInput:
        """`rendered` as Tinker-shaped chunks: text chunks and asset pointers to the stored images."""
        return to_model_input(rendered)

    # -- shared steps -------------------------------------------------------------------------------

    def _validated(
        self, messages: Sequence[Any], tools: Sequence[Any] | None
    ) -> tuple[tuple[Message, ...], tuple[ToolSpec, ...]]:
        return parse_messages(messages), parse_tools(tools)

    def _write(
        self, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...], add_generation_prompt: bool
    ) -> tuple[list[Piece], list[Any]]:
        if not messages:
            raise InvalidMessage("messages", [], "at least one message")
        self.adapter.check(messages, tools)
        writer = self.adapter.write(messages, tools, add_generation_prompt)
        if self.max_images is not None and len(writer.images) > self.max_images:
            raise InvalidMessage("messages", f"<{len(writer.images)} images>", f"at most {self.max_images} images")
        return writer.pieces, writer.images

    def _assemble(self, pieces: list[Piece], parts: list[Any], rule: MaskRule, offset: int) -> _Rendered:
        """Resolve the images these pieces show, then encode; spans are shifted by `offset`."""
        fields = image_fields([p for p in pieces if isinstance(p, ImageSlot)])
        slots = list(fields)
        resolved = {slot: self.images.resolve(parts[slot].image, fields[slot]) for slot in slots}
        lengths = {slot: r.num_tokens for slot, r in resolved.items()}
        pieces = self.adapter.expand_images(pieces, {slot: r.descriptor.payload for slot, r in resolved.items()})
        image_token = -1 if self._image_token_id is None else self._image_token_id
        out: Assembled = assemble(pieces, self._encoder, lengths, image_token, rule, self._reserved)
        images = [
            RenderedImage(resolved[slot].descriptor, offset + start, n)
            for slot, (start, n) in zip(slots, out.spans, strict=True)
        ]
        return _Rendered(out.token_ids, out.loss_mask, images, out.messages, out.content)

    def _joint(self, previous: RenderedConversation, last_pieces: list[Piece]) -> list[int]:
        """Tokens that close the previous conversation's last turn as the template would."""
        stop_tokens = {*self.adapter.stop_tokens, *self.adapter.closing_tokens}
        ends = [i for i, p in enumerate(last_pieces) if isinstance(p, Token) and p.token in stop_tokens]
        if not ends:
            raise InvalidMessage("new_messages[0]", "<continues the previous turn>", "a message that starts a new turn")
        tail = assemble(last_pieces[ends[-1] + 1 :], self._encoder, {}, -1, lambda p: False).token_ids
        ids = previous.token_ids
        closed = {*self.stop_token_ids, *(self._encoder.token_id(t) for t in self.adapter.closing_tokens)}
        if ids and ids[-1] in closed:
            return tail  # a sampled stop token: only the separator is missing
        body = ids[: len(ids) - len(tail)]
        if list(ids[len(body) :]) == tail and body and body[-1] in closed:
            return []  # already closed the way the template closes it
        closer = (*self.adapter.closing_tokens, *self.adapter.stop_tokens)[0]
        return [self._encoder.token_id(closer), *tail]  # cut off: close it

    def _extend(
        self,
        previous: RenderedConversation,
        added: _Rendered,
        messages: tuple[Message, ...],
        awaiting: bool,
        loss_on: LossOn,
    ) -> RenderedConversation:
        old_mask = list(previous.loss_mask)
        if loss_on == "last_assistant" and any(added.mask):
            old_mask = [0] * len(old_mask)  # a newer assistant turn takes over the loss
        joined = _Rendered(
            [*previous.token_ids, *added.ids],
            old_mask + added.mask,
            [*previous.images, *added.images],
            [*previous.message_indices, *added.owners],
            [*previous.content_mask, *added.content],
        )
        return self._finish(joined, previous.messages + messages, previous.tools, awaiting)

    def _finish(
        self, out: _Rendered, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...], awaiting: bool
    ) -> RenderedConversation:
        ids, mask, owners = tuple(out.ids), tuple(out.mask), tuple(out.owners)
        rendered = RenderedConversation(
            ids, mask, tuple(out.images), messages, tools, self.family, awaiting, owners, tuple(out.content)
        )
        check_spans(rendered.token_ids, rendered.images, self._image_token_id, self._markers)
        return rendered

    def _optional_id(self, token: str) -> int | None:
        return self._encoder.token_id(token) if self._encoder.has_token(token) else None


def image_fields(slots: Sequence[ImageSlot]) -> dict[int, str]:
    """Each image's name in errors: `messages[m].images[k]`, the k-th image of message m (conversation order)."""
    seen: dict[int, int] = {}
    fields = {}
    for slot in slots:
        fields[slot.image] = f"messages[{slot.message}].images[{seen.get(slot.message, 0)}]"
        seen[slot.message] = seen.get(slot.message, 0) + 1
    return fields


def _mask_rule(loss_on: LossOn, messages: Sequence[Message]) -> MaskRule:
    """Which pieces carry loss: assistant-written ones, all, or only the last assistant message's."""
    if loss_on == "all":
        return lambda piece: True
    if loss_on == "assistant":
        return lambda piece: piece.trained
    if loss_on != "last_assistant":
        raise InvalidMessage("loss_on", loss_on, "one of 'assistant', 'all', 'last_assistant'")
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return lambda piece: piece.trained and piece.message == last
