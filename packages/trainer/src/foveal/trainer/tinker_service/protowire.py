"""The protobuf half of the Tinker wire: forward_backward requests in, forward_backward and sample results out.

The SDK (tinker 0.38) posts `/api/v1/forward_backward` as `application/x-protobuf` (`ForwardBackwardRequest`
of `tinker.proto.tinker_public_pb2`, the schema the SDK itself ships), and reads `ForwardBackwardOutput`
and `SampleResponse` futures ONLY as protobuf. Everything else on the wire is JSON (`wire.py`). Parsing
here turns the message into plain frozen values (chunks as `foveal.renderers.chunks` models, tensors as
numpy arrays), refusing what this service does not compute with a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError
from pydantic import ValidationError
from tinker.proto import tinker_public_pb2 as pb

from foveal.renderers.chunks import EncodedTextChunk, ImageChunk, ModelInput
from foveal.trainer.serving.errors import invalid

_DTYPES = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64, pb.DTYPE_INT32: np.int32}
_STOP_REASONS = {"stop": pb.STOP_REASON_STOP, "length": pb.STOP_REASON_LENGTH}


@dataclass(frozen=True)
class DatumIn:
    """One datum: its model input and its loss inputs (1-D arrays by name, as sent)."""

    model_input: ModelInput
    loss_fn_inputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class ForwardBackwardIn:
    model_id: str
    seq_id: int
    loss_fn: str
    loss_fn_config: dict[str, float | str]
    forward_only: bool
    data: tuple[DatumIn, ...]


def parse_forward_backward(body: bytes) -> ForwardBackwardIn:
    """Decode the request body; a body that is not the message, or parts we do not compute, are 400s."""
    message = pb.ForwardBackwardRequest()
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise invalid("body", "a serialized tinker ForwardBackwardRequest (application/x-protobuf)") from None
    if not message.data:
        raise invalid("data", "at least one datum")
    config: dict[str, float | str] = {key: value for key, value in message.loss_fn_config.items()}
    for key, value in message.loss_fn_config_v2.items():
        config[key] = value.text if value.WhichOneof("value") == "text" else value.number
    return ForwardBackwardIn(
        model_id=message.model_id,
        seq_id=message.seq_id,
        loss_fn=message.loss_fn,
        loss_fn_config=config,
        forward_only=message.forward_only,
        data=tuple(_datum(datum, f"data[{index}]") for index, datum in enumerate(message.data)),
    )


def _datum(datum: pb.Datum, field: str) -> DatumIn:
    if datum.model_input_spans or datum.loss_fn_input_spans:
        raise invalid(f"{field}.model_input_spans", "no provenance spans (not supported by this service)")
    chunks = [_chunk(chunk, f"{field}.model_input.chunks[{index}]") for index, chunk in enumerate(datum.model_input)]
    inputs = {name: _tensor(tensor, f"{field}.loss_fn_inputs.{name}") for name, tensor in datum.loss_fn_inputs.items()}
    return DatumIn(ModelInput(chunks=tuple(chunks)), inputs)


def _chunk(chunk: pb.Chunk, field: str) -> EncodedTextChunk | ImageChunk:
    kind = chunk.WhichOneof("chunk")
    if kind == "encoded_text":
        return EncodedTextChunk(tokens=tuple(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32).tolist()))
    if kind != "image":
        raise invalid(field, f"an encoded_text or image chunk (got {kind or 'an empty chunk'})")
    image = chunk.image
    if image.HasField("override_dimensions"):
        raise invalid(f"{field}.override_dimensions", "unset (images are used at their encoded size)")
    expected = image.expected_tokens if image.HasField("expected_tokens") else None
    try:
        return ImageChunk(data=image.data, format=image.format, expected_tokens=expected)  # type: ignore[arg-type]
    except ValidationError as error:
        where = ".".join(str(part) for part in error.errors()[0]["loc"])
        raise invalid(f"{field}.{where}", error.errors()[0]["msg"]) from None


def _tensor(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A dense 1-D array; CSR tensors are densified, anything but one value per position is refused."""
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise invalid(f"{field}.dtype", f"float32 or int64 (got proto dtype {tensor.dtype})")
    shape = list(tensor.shape)
    if tensor.WhichOneof("encoding") == "sparse_csr":
        values = _frombuffer(tensor.sparse_csr.values, dtype, field)
        crow = _frombuffer(tensor.sparse_csr.crow_indices, np.int64, field)
        cols = _frombuffer(tensor.sparse_csr.col_indices, np.int64, field)
        array = _dense_from_csr(values, crow, cols, shape, field)
    else:
        array = _frombuffer(tensor.dense, dtype, field)
    if shape and list(array.shape) != shape and array.size == int(np.prod(shape)):
        array = array.reshape(shape)
    if array.ndim != 1:
        raise invalid(f"{field}.shape", f"one value per position, shape [N] (got {shape})")
    return array


def _frombuffer(data: bytes, dtype: type, field: str) -> np.ndarray:
    if len(data) % np.dtype(dtype).itemsize:
        raise invalid(field, f"a whole number of {np.dtype(dtype).name} values")
    return np.frombuffer(data, dtype=dtype).copy()


def _dense_from_csr(values: np.ndarray, crow: np.ndarray, cols: np.ndarray, shape: list[int], field: str) -> np.ndarray:
    if len(shape) != 2 or len(crow) != shape[0] + 1 or len(cols) != len(values) or (cols >= max(shape[1], 1)).any():
        raise invalid(f"{field}.sparse_csr", f"CSR indices consistent with shape {shape}")
    dense = np.zeros(shape, dtype=values.dtype)
    rows = np.repeat(np.arange(shape[0]), np.diff(crow))
    dense[rows, cols] = values
    return dense


def forward_backward_output(outputs: Sequence[dict[str, np.ndarray]], metrics: dict[str, float]) -> bytes:
    """`ForwardBackwardOutput`: one ArrayRecord holding every datum's 1-D float32 outputs, and the metrics."""
    message = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord", metrics=metrics)
    record = message.loss_fn_outputs.add(num_datums=len(outputs))
    for name in outputs[0] if outputs else ():
        arrays = [np.ascontiguousarray(output[name], dtype=np.float32) for output in outputs]
        offsets = np.cumsum([0, *(array.nbytes for array in arrays)]).astype(np.int64)
        field = record.fields[name]
        field.data = b"".join(array.tobytes() for array in arrays)
        field.offsets = offsets.tobytes()
        field.dtype = pb.DTYPE_FLOAT32
    return message.SerializeToString()


@dataclass(frozen=True)
class SampledOut:
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    stop_reason: str


def sample_response(sequences: Sequence[SampledOut], prompt_logprobs: Sequence[float] | None) -> bytes:
    """`SampleResponse`: int32 tokens and float32 logprobs per sequence; prompt logprobs NaN where unscored."""
    message = pb.SampleResponse()
    for sequence in sequences:
        message.sequences.add(
            stop_reason=_STOP_REASONS[sequence.stop_reason],
            tokens=np.asarray(sequence.tokens, dtype=np.int32).tobytes(),
            logprobs=np.asarray(sequence.logprobs, dtype=np.float32).tobytes(),
        )
    if prompt_logprobs is not None:
        message.prompt_logprobs = np.asarray(prompt_logprobs, dtype=np.float32).tobytes()
    return message.SerializeToString()
