"""The service state behind the routes: sessions, training models, sampler checkpoints, sampling sessions.

Requests are checked and their images stored when they arrive (a bad one is a 4xx naming the field, and
nothing is queued); the work itself becomes a future. Training work (create_model, forward_backward,
optim_step, save_weights_for_sampler) runs on ONE worker thread in arrival order, which is submission
order: the SDK sends a training client's next request only after the previous one was accepted, so
forward_backward then optim_step apply exactly in the order the user called them. Sampling runs
concurrently on the samplers' own engines.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from foveal.configs.inference import InferenceConfig
from foveal.configs.tinker_service import TinkerServiceConfig
from foveal.renderers.factory import build_renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.data.collate import PackSample
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.errors import RequestError, invalid, too_long
from foveal.trainer.model.loading import load_model, load_processor, resolve_precision, resolve_source
from foveal.trainer.tinker_service import wire
from foveal.trainer.tinker_service.datums import Vocabulary, check_token_ids, prepare_datum, render_prompt
from foveal.trainer.tinker_service.futures import FuturesTable, Payload, failed
from foveal.trainer.tinker_service.lora import LoraAdapters, LoraSpec
from foveal.trainer.tinker_service.losses import checked_config, loss_spec
from foveal.trainer.tinker_service.protowire import parse_forward_backward
from foveal.trainer.tinker_service.sampling import SamplerPool, sample
from foveal.trainer.tinker_service.training import TrainedModel

log = logging.getLogger(__name__)
SAMPLER_PATH = re.compile(r"^tinker://([0-9a-f]{16})/sampler_weights/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")


@dataclass
class ModelRecord:
    """A training client's model; `trained` is set by the worker once the weights are loaded."""

    model_id: str
    lora_rank: int | None
    trained: TrainedModel | None = None
    saved: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class SamplerRecord:
    sampler_id: str
    folder: Path
    model_path: str | None


class TinkerService:
    """One base model, trained by any number (up to a limit) of training clients and sampled from checkpoints."""

    def __init__(self, config: TinkerServiceConfig, *, cache_root: Path | None = None) -> None:
        self.config = config
        self.section = config.tinker
        self.name = config.model.name_or_path
        self.source = resolve_source(self.name, cache_root)
        self.device = _device(config.tinker.device)
        self.precision = resolve_precision(config.tinker.precision, self.device)
        self.store = ImageStore.from_config(config.multimodal, config.logging.run_dir)
        self.renderer = build_renderer(self.source, config.renderer, store=self.store, multimodal=config.multimodal)
        self.processor = load_processor(config.model, self.source)
        self.materialize = self._materializer()
        vocab_size = AutoConfig.from_pretrained(self.source).get_text_config().vocab_size
        self.train_vocab = Vocabulary(vocab_size, config.tinker.micro_batch_tokens)
        self.sample_vocab = Vocabulary(vocab_size, config.tinker.max_model_len - 1)
        self.checkpoints = config.tinker.checkpoints(config.logging.run_dir).resolve()
        self.futures = FuturesTable()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foveal-tinker-train")
        self.pool = SamplerPool(self._serve_config, config.tinker.max_loaded_samplers)
        self.sessions: dict[str, bool] = {}
        self.models: dict[str, ModelRecord] = {}
        self.samplers: dict[str, SamplerRecord] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- sessions -----------------------------------------------------------------------------------

    def create_session(self) -> wire.CreateSessionResponse:
        session_id = uuid.uuid4().hex
        self.sessions[session_id] = True
        return wire.CreateSessionResponse(session_id=session_id)

    def heartbeat(self, session_id: str) -> wire.SessionHeartbeatResponse:
        """410 once the session finished: the SDK then stops its heartbeat loop."""
        if not self.sessions.get(self._session(session_id)):
            raise RequestError("invalid_request", 410, f"session_id: session {session_id!r} has finished", "session_id")
        return wire.SessionHeartbeatResponse()

    def finish(self, session_id: str) -> None:
        self.sessions[self._session(session_id)] = False

    def _session(self, session_id: str) -> str:
        if session_id not in self.sessions:
            raise RequestError("not_found", 404, f"session_id: no session {session_id!r}", "session_id")
        return session_id

    def capabilities(self) -> wire.ServerCapabilities:
        model = wire.SupportedModel(model_name=self.name, max_context_length=self.section.max_model_len)
        return wire.ServerCapabilities(supported_models=[model])

    # -- training -----------------------------------------------------------------------------------

    def create_model(self, request: wire.CreateModelRequest) -> wire.UntypedAPIFuture:
        self._session(request.session_id)
        if request.base_model != self.name:
            raise invalid("base_model", f"{self.name!r}, the model this service serves (got {request.base_model!r})")
        lora = request.lora_config if self.section.training_mode == "lora" else None
        if self.section.training_mode == "lora" and lora is None:
            raise invalid("lora_config", "a LoRA config (this service trains LoRA adapters)")
        with self._lock:
            if len(self.models) >= self.section.max_training_models:
                raise invalid("base_model", f"at most {self.section.max_training_models} training clients at once")
            record = ModelRecord(uuid.uuid4().hex[:16], lora.rank if lora else None)
            self.models[record.model_id] = record

        def load() -> Payload:
            model = load_model(self.config.model, self.source, self.device)
            adapters = None if lora is None else LoraAdapters(model, self._lora_spec(lora))
            record.trained = TrainedModel(
                model, adapters, precision=self.precision, materialize=self.materialize,
                micro_batch_tokens=self.section.micro_batch_tokens, loss_chunk_tokens=self.section.loss_chunk_tokens,
            )  # fmt: skip
            return Payload(json=wire.CreateModelResponse(model_id=record.model_id))

        return self._train(load, record.model_id)

    def info(self, model_id: str) -> wire.GetInfoResponse:
        record = self._model(model_id, "model_id")
        data = wire.ModelData(arch=AutoConfig.from_pretrained(self.source).model_type, model_name=self.name, tokenizer_id=self.source)
        return wire.GetInfoResponse(
            model_data=data, model_id=model_id, is_lora=record.lora_rank is not None,
            lora_rank=record.lora_rank, model_name=self.name,
        )  # fmt: skip

    def forward_backward(self, body: bytes) -> wire.UntypedAPIFuture:
        """Parse, render and check every datum now (4xx on the first bad one); compute on the worker."""
        request = parse_forward_backward(body)
        record = self._model(request.model_id, "model_id")
        loss = loss_spec(request.loss_fn)
        config = checked_config(loss, request.loss_fn_config)
        datums = [prepare_datum(datum, i, self.renderer, self.train_vocab, loss) for i, datum in enumerate(request.data)]

        def run() -> Payload:
            return Payload(proto=self._trained(record).forward_backward(datums, loss, config, request.forward_only))

        return self._train(run, record.model_id)

    def optim_step(self, request: wire.OptimStepRequest) -> wire.UntypedAPIFuture:
        record = self._model(request.model_id, "model_id")
        return self._train(lambda: Payload(json=self._trained(record).optim_step(request.adam_params)), record.model_id)

    def save_for_sampler(self, request: wire.SaveWeightsForSamplerRequest) -> wire.UntypedAPIFuture:
        """A named checkpoint answers its `tinker://` path; an unnamed one a sampling session on it."""
        record = self._model(request.model_id, "model_id")
        name = request.path or f"ephemeral-{uuid.uuid4().hex[:12]}"
        with self._lock:
            if name in record.saved:
                raise invalid("path", f"a name this model has not saved before (got {name!r})")
            record.saved.add(name)
        folder = self.checkpoints / record.model_id / "sampler_weights" / name
        tinker_path = f"tinker://{record.model_id}/sampler_weights/{name}"

        def save() -> Payload:
            folder.parent.mkdir(parents=True, exist_ok=True)
            self._trained(record).save_for_sampler(folder, self.processor)
            if request.path is not None:
                return Payload(json=wire.SaveWeightsForSamplerResponse(path=tinker_path))
            session = self._add_sampler(folder, tinker_path)
            return Payload(json=wire.SaveWeightsForSamplerResponse(sampling_session_id=session))

        return self._train(save, record.model_id)

    # -- sampling -----------------------------------------------------------------------------------

    def create_sampling_session(self, request: wire.CreateSamplingSessionRequest) -> wire.CreateSamplingSessionResponse:
        self._session(request.session_id)
        if request.model_path is not None:
            session = self._add_sampler(self._checkpoint(request.model_path), request.model_path)
        elif request.base_model == self.name:
            session = self._add_sampler(Path(self.source), None)
        else:
            raise invalid("base_model", f"{self.name!r} or a model_path (got {request.base_model!r})")
        return wire.CreateSamplingSessionResponse(sampling_session_id=session)

    def sampler(self, sampler_id: str) -> wire.GetSamplerResponse:
        record = self._sampler(sampler_id, "sampler_id")
        return wire.GetSamplerResponse(sampler_id=sampler_id, base_model=self.name, model_path=record.model_path)

    async def asample(self, request: wire.SampleRequest) -> wire.UntypedAPIFuture:
        """Render and check the prompt now; sample on the sampler's engine as an asyncio task."""
        if request.sampling_session_id is None:
            raise invalid("sampling_session_id", "the id of a sampling session (create a sampling client first)")
        record = self._sampler(request.sampling_session_id, "sampling_session_id")
        rendered = await asyncio.to_thread(render_prompt, request.prompt, self.renderer, "prompt")
        check_token_ids(rendered.token_ids, self.sample_vocab, "prompt.token_ids")
        max_tokens = request.sampling_params.max_tokens or self.section.default_max_tokens
        if len(rendered.token_ids) + max_tokens > self.section.max_model_len:
            message = f"{max_tokens} after {len(rendered.token_ids)} prompt tokens exceeds {self.section.max_model_len}"
            raise too_long("sampling_params.max_tokens", message)
        request_id, future = self.futures.create()

        async def run() -> None:
            try:
                backend = await asyncio.to_thread(self.pool.backend, record.folder)
                future.set_result(Payload(proto=await sample(backend, request, rendered, max_tokens)))
            except Exception as error:  # the failure is the request's answer, delivered through its future
                future.set_result(self._failure(error))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        ids = [f"{request_id}-{index}" for index in range(request.num_samples)]
        return wire.UntypedAPIFuture(request_id=request_id, sample_sequence_ids=ids)

    def close(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)
        self.pool.close()

    # -- helpers ------------------------------------------------------------------------------------

    def _train(self, job: Callable[[], Payload], model_id: str) -> wire.UntypedAPIFuture:
        """Queue `job` on the training worker; its payload (or failure) answers the returned future."""
        request_id, future = self.futures.create()
        self.worker.submit(self._run, job, future)
        return wire.UntypedAPIFuture(request_id=request_id, model_id=model_id)

    def _run(self, job: Callable[[], Payload], future: Future[Payload]) -> None:
        try:
            future.set_result(job())
        except Exception as error:  # the failure is the request's answer, delivered through its future
            future.set_result(self._failure(error))

    def _failure(self, error: Exception) -> Payload:
        payload = failed(error)
        if not payload.user_error:
            log.error("tinker request failed", exc_info=error)
        return payload

    def _trained(self, record: ModelRecord) -> TrainedModel:
        if record.trained is None:
            raise invalid("model_id", f"a model that loaded ({record.model_id!r} failed to load)")
        return record.trained

    def _model(self, model_id: str, field_name: str) -> ModelRecord:
        record = self.models.get(model_id)
        if record is None:
            raise RequestError("not_found", 404, f"{field_name}: no model {model_id!r}", field_name)
        return record

    def _sampler(self, sampler_id: str, field_name: str) -> SamplerRecord:
        record = self.samplers.get(sampler_id)
        if record is None:
            raise RequestError("not_found", 404, f"{field_name}: no sampler {sampler_id!r}", field_name)
        return record

    def _add_sampler(self, folder: Path, model_path: str | None) -> str:
        sampler_id = uuid.uuid4().hex
        with self._lock:
            self.samplers[sampler_id] = SamplerRecord(sampler_id, folder, model_path)
        return sampler_id

    def _checkpoint(self, model_path: str) -> Path:
        """The folder of a sampler checkpoint this service saved (now or in an earlier run in the same folder)."""
        match = SAMPLER_PATH.match(model_path)
        if match is None:
            raise invalid("model_path", f"tinker://<model id>/sampler_weights/<name> (got {model_path!r})")
        folder = self.checkpoints / match.group(1) / "sampler_weights" / match.group(2)
        if not (folder / "config.json").is_file():
            raise RequestError("not_found", 404, f"model_path: no saved sampler weights {model_path!r}", "model_path")
        return folder

    def _lora_spec(self, lora: wire.LoraConfig) -> LoraSpec:
        return LoraSpec(
            rank=lora.rank, alpha=self.section.lora_alpha, seed=lora.seed,
            train_attn=lora.train_attn, train_mlp=lora.train_mlp, train_unembed=lora.train_unembed,
        )  # fmt: skip

    def _materializer(self) -> Callable[[TrainingSample], Any]:
        """Pixels per sample through the family's adapter for VLMs; text models pack samples as they are."""
        family = self.renderer.adapter.layout_family
        if family is None:
            return lambda sample_: PackSample(sample_.sample_id, sample_.token_ids, sample_.loss_weights)
        adapter = image_adapter(family, self.processor, self.config.multimodal)
        return Materializer(adapter, self.store, missing_image_policy="error").materialize

    def _serve_config(self, folder: Path) -> ServeConfig:
        inference = InferenceConfig(device=self.section.device, max_model_len=self.section.max_model_len)
        model = self.config.model.model_copy(update={"name_or_path": str(folder)})
        return ServeConfig(
            model=model, multimodal=self.config.multimodal, renderer=self.config.renderer,
            logging=self.config.logging, inference=inference,
        )  # fmt: skip


def _device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)
