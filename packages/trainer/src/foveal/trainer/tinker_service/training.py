"""One training client's model: forward_backward with a Tinker loss, optim_step with the client's Adam
parameters, and sampler checkpoints.

Gradients accumulate over forward_backward calls until optim_step applies and clears them, as in Tinker.
Datums are packed into rows of at most `micro_batch_tokens` (`foveal.trainer.data.packing`), each image
materialized per sample and concatenated along patches with its own grid (never padded to a common size),
and run through the trainer's own packed forward and chunked LM head (`[tinker].loss_chunk_tokens`; the full
logits when the unembedding carries a LoRA). Each datum's loss reads the logprob of its `target_tokens[i]` at
position i. Everything here runs on the service's single training worker thread.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foveal.trainer.data.collate import Packable, collate_packed, pack_item
from foveal.trainer.data.packing import plan_micro_batches
from foveal.trainer.model.quiet import quiet_progress
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.training.chunked_ce import packed_token_nll
from foveal.trainer.model.loading import Precision
from foveal.trainer.training.optim import clip_gradients
from foveal.trainer.tinker_service.datums import PreparedDatum
from foveal.trainer.tinker_service.lora import LoraAdapters
from foveal.trainer.tinker_service.losses import LossSpec
from foveal.trainer.tinker_service.protowire import forward_backward_output
from foveal.trainer.tinker_service.wire import AdamParams, OptimStepResponse

Materialize = Callable[[TrainingSample], Packable]


class TrainedModel:
    """A base model, its LoRA adapters (None for full fine-tuning) and AdamW over whatever trains."""

    def __init__(
        self,
        model: torch.nn.Module,
        adapters: LoraAdapters | None,
        *,
        precision: Precision,
        materialize: Materialize,
        micro_batch_tokens: int,
        loss_chunk_tokens: int = 0,
    ) -> None:
        self.model = model
        self.adapters = adapters
        self.precision = precision
        self.materialize = materialize
        self.micro_batch_tokens = micro_batch_tokens
        self.loss_chunk_tokens = loss_chunk_tokens
        self.positions = position_scheme(model)
        if adapters is not None:
            model.requires_grad_(False)
        trainable = adapters.parameters() if adapters is not None else model.parameters()
        self.params = [param for param in trainable if param.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=0.0, foreach=True)
        self.steps = 0

    def forward_backward(
        self, datums: Sequence[PreparedDatum], loss: LossSpec, config: Mapping[str, float], forward_only: bool
    ) -> bytes:
        """Run every datum, add the gradient of the summed loss (unless forward_only); the protobuf answer."""
        samples = [self.materialize(datum.sample) for datum in datums]
        outputs: list[dict[str, np.ndarray]] = [{} for _ in datums]
        total = 0.0
        for group in plan_micro_batches([pack_item(sample) for sample in samples], self.micro_batch_tokens):
            with torch.set_grad_enabled(not forward_only):
                row_loss = self._row_loss([samples[i] for i in group], [datums[i] for i in group], loss, config)
            for index, logprobs in zip(group, row_loss.logprobs, strict=True):
                outputs[index] = {"logprobs": logprobs}
            if not forward_only:
                row_loss.value.backward()
            total += float(row_loss.value.detach())
        return forward_backward_output(outputs, {"loss:sum": total})

    def _row_loss(
        self, samples: list[Packable], datums: list[PreparedDatum], loss: LossSpec, config: Mapping[str, float]
    ) -> _RowLoss:
        device = self.precision.device
        batch = collate_packed(samples, self.positions).to(device)
        targets = torch.from_numpy(np.concatenate([datum.targets for datum in datums])).to(device).view(1, -1)
        with self.precision.autocast():
            logprobs = -packed_token_nll(self.model, batch, self.loss_chunk_tokens, labels=targets)[0]
        bounds = batch.cu_seqlens.tolist()
        terms, per_datum = [], []
        for k, datum in enumerate(datums):
            target_logprobs = logprobs[bounds[k] : bounds[k + 1]]
            inputs = {name: torch.from_numpy(values).to(device) for name, values in datum.inputs.items()}
            terms.append(loss.fn(target_logprobs, inputs, config))
            per_datum.append(target_logprobs.detach().cpu().numpy())
        return _RowLoss(torch.stack(terms).sum(), per_datum)

    def optim_step(self, params: AdamParams) -> OptimStepResponse:
        """One AdamW step with this request's hyper-parameters, after optional clipping; gradients cleared."""
        for group in self.optimizer.param_groups:
            group.update(
                lr=params.learning_rate,
                betas=(params.beta1, params.beta2),
                eps=params.eps,
                weight_decay=params.weight_decay,
            )
        max_norm = params.grad_clip_norm if params.grad_clip_norm > 0 else float("inf")
        norm = clip_gradients(self.params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return OptimStepResponse(metrics={"grad_norm": norm, "step": float(self.steps)})

    def save_for_sampler(self, folder: Path, processor: Any) -> None:
        """The current weights (adapters merged in) as a `from_pretrained` folder, published by rename."""
        temp = folder.with_name(f".tmp-{folder.name}")
        shutil.rmtree(temp, ignore_errors=True)
        state = self.adapters.merged_state_dict(self.model) if self.adapters is not None else None
        with quiet_progress():
            self.model.save_pretrained(temp, state_dict=state)
            processor.save_pretrained(temp)
        temp.rename(folder)


@dataclass(frozen=True)
class _RowLoss:
    """The summed loss of one packed row and each datum's target logprobs."""

    value: torch.Tensor
    logprobs: list[np.ndarray]
