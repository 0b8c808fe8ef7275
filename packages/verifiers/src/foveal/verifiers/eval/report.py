"""The self-contained HTML report of an eval: summary, then every example with its images and rollouts.

One file that opens anywhere: images are embedded as `data:` URIs read (hash-verified) from the run's
store, and nothing is loaded from the network. Prompts and completions are untrusted text (a model can
write `<script>`), so the template escapes everything it prints and a Content-Security-Policy forbids
scripts and every source but inline `data:` images, should escaping ever be bypassed.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2

from foveal.renderers.atomic_files import write_atomic
from foveal.renderers.errors import ContractError
from foveal.renderers.images import stored_media_type
from foveal.renderers.messages import AssistantMessage, ImagePart, Message
from foveal.renderers.store import ImageStore

from foveal.verifiers.eval.summary import Summary
from foveal.verifiers.rollout import ImageAsset, Rollout

IMAGE_WIDTH = 224
"""Display width of every image in CSS pixels (small images are scaled up, pixelated, to be readable)."""


@dataclass
class _Images:
    """data: URIs of the store's images, read once each; failures become a visible reason, not a crash."""

    store: ImageStore
    cache: dict[str, dict[str, str]] = field(default_factory=dict)

    def part(self, uri: str, hashes: dict[str, str]) -> dict[str, str]:
        if uri not in self.cache:
            self.cache[uri] = self._read(uri, hashes.get(uri))
        return self.cache[uri]

    def _read(self, uri: str, hash_hex: str | None) -> dict[str, str]:
        if hash_hex is None:
            return {"kind": "missing", "reason": "not a stored image of this rollout"}
        try:
            data = self.store.read_verified(uri, hash_hex)
        except ContractError as error:
            return {"kind": "missing", "reason": f"{type(error).__name__}: {error.expected}"}
        src = f"data:{stored_media_type(data)};base64," + base64.b64encode(data).decode("ascii")
        return {"kind": "image", "src": src, "hash": hash_hex}


def write_report(path: Path, summary: Summary, groups: Sequence[Sequence[Rollout]], store: ImageStore) -> Path:
    """Write the report to `path` (written whole to a temporary name, then renamed) and return it."""
    images = _Images(store)
    examples = [_example(group, images, summary.pass_threshold) for group in groups]
    template = _environment().get_template("report.html.jinja")
    html = template.render(summary=summary, examples=examples, image_width=IMAGE_WIDTH)
    return write_atomic(path, html.encode("utf-8"), durable=False)


def _environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(lambda name: files("foveal.verifiers.eval").joinpath(name).read_text("utf-8"))
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


def _example(group: Sequence[Rollout], images: _Images, threshold: float) -> dict[str, Any]:
    first = group[0]
    return {
        "example_id": first.example_id,
        "answer": first.answer,
        "prompt": [_message(m, images, _hashes(first.images)) for m in first.prompt],
        "rollouts": [_rollout(r, images, threshold) for r in group],
    }


def _rollout(rollout: Rollout, images: _Images, threshold: float) -> dict[str, Any]:
    hashes = _hashes(rollout.images)
    return {
        "index": rollout.sample_index,
        "reward": rollout.reward,
        "passed": rollout.reward >= threshold,
        "stop_reason": rollout.stop_reason,
        "seconds": rollout.seconds,
        "metrics": rollout.metrics,
        "messages": [_message(m, images, hashes) for m in rollout.completion],
        "errors": rollout.errors,
    }


def _message(message: Message, images: _Images, hashes: dict[str, str]) -> dict[str, Any]:
    parts: list[dict[str, str]] = []
    if isinstance(message.content, str):
        parts.append({"kind": "text", "text": message.content})
    else:
        for part in message.content:
            if isinstance(part, ImagePart):
                parts.append(images.part(str(part.image), hashes))
            else:
                parts.append({"kind": "text", "text": part.text})
    calls = message.tool_calls if isinstance(message, AssistantMessage) else ()
    return {"role": message.role, "parts": parts, "tool_calls": [f"{c.name}({c.arguments_json()})" for c in calls]}


def _hashes(assets: Sequence[ImageAsset]) -> dict[str, str]:
    return {asset.uri: asset.hash for asset in assets}
