"""The DFlash draft: a few transformer layers that fill a whole block of masked tokens in one forward.

Input: the target's context features (hidden states of the captured layers, concatenated, `[C, n*H]`),
projected once to the draft width (`fc`, then RMSNorm) and injected as extra keys and values into every
layer's attention, through that layer's own k/v projections ("KV injection"; the context is not re-encoded
by the draft). The block (the anchor's embedding, then a learned mask embedding) is the only query stream.
Qwen3-style layers: RMSNorm, attention with per-head q/k RMSNorm and 1-D rotary positions, SwiGLU MLP. The
draft is as wide as the target because it reads its embeddings from, and writes its logits through, the
target's frozen embedding and LM head (`foveal.trainer.dflash.weights`).

DFlash takes the mask embedding from a reserved token of the target vocabulary; here it is a draft
parameter initialised to the mean target embedding, so no vocabulary row has to be spare.

A saved draft is `draft_config.json` (a `DraftSpec`) + `model.safetensors`, no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from torch import nn

SPEC_FILE = "draft_config.json"
WEIGHTS_FILE = "model.safetensors"


class DraftSpec(BaseModel):
    """Everything that decides the draft's shape and how it reads the target; saved beside its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    block_size: int
    target_layer_ids: tuple[int, ...]
    embed_weight: str
    lm_head_weight: str

    @property
    def context_width(self) -> int:
        return len(self.target_layer_ids) * self.hidden_size


def rotary(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin `[L, head_dim]` of 1-D rotary positions (half-split layout)."""
    inverse = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[:, None] * inverse[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x `[L, heads, head_dim]` rotated by position."""
    first, second = x.chunk(2, dim=-1)
    turned = torch.cat([-second, first], dim=-1)
    return (x * cos[:, None, :] + turned * sin[:, None, :]).to(x.dtype)


class DraftAttention(nn.Module):
    """Block queries over [context keys/values | block keys/values], under the caller's mask."""

    def __init__(self, spec: DraftSpec) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
        self.q_proj = nn.Linear(spec.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(spec.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(spec.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, spec.hidden_size, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=spec.rms_norm_eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=spec.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        rope_q: tuple[torch.Tensor, torch.Tensor],
        rope_kv: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        queries, keys = x.shape[0], context.shape[0] + x.shape[0]
        both = torch.cat([context, x])
        q = apply_rotary(self.q_norm(self.q_proj(x).view(queries, self.heads, self.head_dim)), *rope_q)
        k = apply_rotary(self.k_norm(self.k_proj(both).view(keys, self.kv_heads, self.head_dim)), *rope_kv)
        v = self.v_proj(both).view(keys, self.kv_heads, self.head_dim)
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1).to(v.dtype), v.repeat_interleave(groups, dim=1)
        q = q.to(v.dtype)  # the norms may run in fp32 under autocast while the projections run in bf16
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask
        )
        return self.o_proj(out[0].transpose(0, 1).reshape(queries, self.heads * self.head_dim))


class DraftMLP(nn.Module):
    def __init__(self, spec: DraftSpec) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=False)
        self.up_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=False)
        self.down_proj = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DraftLayer(nn.Module):
    def __init__(self, spec: DraftSpec) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(spec.hidden_size, eps=spec.rms_norm_eps)
        self.self_attn = DraftAttention(spec)
        self.post_attention_layernorm = nn.RMSNorm(spec.hidden_size, eps=spec.rms_norm_eps)
        self.mlp = DraftMLP(spec)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        rope_q: tuple[torch.Tensor, torch.Tensor],
        rope_kv: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), context, rope_q, rope_kv, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class DFlashDraft(nn.Module):
    """Context features + block anchors -> hidden states of every block position (logits via the target head)."""

    def __init__(self, spec: DraftSpec, mask_embedding: torch.Tensor | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.fc = nn.Linear(spec.context_width, spec.hidden_size, bias=False)
        self.hidden_norm = nn.RMSNorm(spec.hidden_size, eps=spec.rms_norm_eps)
        self.layers = nn.ModuleList(DraftLayer(spec) for _ in range(spec.num_layers))
        self.norm = nn.RMSNorm(spec.hidden_size, eps=spec.rms_norm_eps)
        initial = torch.zeros(spec.hidden_size) if mask_embedding is None else mask_embedding.detach().float()
        self.mask_embedding = nn.Parameter(initial.clone())

    def get_decoder(self) -> DFlashDraft:
        """The module whose `layers` FSDP2 shards one by one (`foveal.trainer.training.distributed.shard_model`)."""
        return self

    def forward(
        self,
        context: torch.Tensor,
        context_positions: torch.Tensor,
        anchor_embeddings: torch.Tensor,
        block_positions: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states `[N*B, H]` of N blocks.

        context `[C, n*H]` target features; context_positions `[C]`; anchor_embeddings `[N, H]`;
        block_positions `[N, B]`; mask `[N*B, C + N*B]` bool (None: every query sees every key).
        """
        blocks, size = block_positions.shape
        fill = self.mask_embedding.expand(blocks, size - 1, -1)
        x = torch.cat([anchor_embeddings.to(fill.dtype)[:, None, :], fill], dim=1).reshape(blocks * size, -1)
        ctx = self.hidden_norm(self.fc(context.to(self.fc.weight.dtype)))
        query_positions = block_positions.reshape(-1)
        rope_q = rotary(query_positions, self.spec.head_dim, self.spec.rope_theta)
        rope_kv = rotary(torch.cat([context_positions, query_positions]), self.spec.head_dim, self.spec.rope_theta)
        for layer in self.layers:
            x = layer(x, ctx, rope_q, rope_kv, mask)
        return self.norm(x)

    def save_pretrained(self, folder: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the spec and the weights (`state_dict` when given: the full state gathered under FSDP2)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = self.state_dict() if state_dict is None else state_dict
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, folder / WEIGHTS_FILE)
        (folder / SPEC_FILE).write_text(self.spec.model_dump_json(indent=1), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, folder: Path) -> DFlashDraft:
        folder = Path(folder)
        spec = DraftSpec.model_validate(json.loads((folder / SPEC_FILE).read_text(encoding="utf-8")))
        draft = cls(spec)
        draft.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return draft
