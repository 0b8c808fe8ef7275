"""Train a vision-language shape classifier with the Tinker SDK against a running `foveal serve-tinker`.

A plain Tinker training loop in the style of the cookbook's VLM classifier: each datum is a chat with an
image (an `ImageChunk` of PNG bytes) and the question "Which shape is this?", and the loss is cross entropy
on the answer tokens only. After training it saves sampler weights, opens a sampling client on them and
asks about a few held-out images.

    FOVEAL_TINKER_API_KEY=tml-change-me-0123456789 uv run foveal serve-tinker --config examples/tinker/serve_tiny.toml
    TINKER_API_KEY=tml-change-me-0123456789 uv run python examples/tinker/vlm_classifier.py --base-url http://127.0.0.1:8100

Nothing here is Foveal-specific except the shapes generator used for data: the same script runs against
any Tinker service that serves the model (`--base-model`).
"""

from __future__ import annotations

import argparse
import io
from typing import Any

import tinker
from PIL import Image
from tinker import types
from transformers import AutoProcessor

from foveal.verifiers.datasets.shapes import ShapesSpec, generate_example

QUESTION = "Which shape is this? Answer circle, square or triangle."
SHAPES = ShapesSpec(image_size=56, min_shapes=1, max_shapes=1)


def shape_image(index: int, split: str = "train") -> tuple[bytes, str]:
    """PNG bytes of a one-shape scene and the shape's name."""
    example = generate_example(index, seed=7, split=split, spec=SHAPES)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    example.image.save(buffer, format="PNG")
    return buffer.getvalue(), example.shapes[0].kind


def image_tokens(processor: Any, png: bytes) -> int:
    """How many placeholder tokens the model's processor gives this image (ImageChunk.expected_tokens)."""
    image_processor = processor.image_processor
    grid = image_processor(images=[Image.open(io.BytesIO(png)).convert("RGB")], return_tensors="pt")["image_grid_thw"]
    return int(grid.prod()) // image_processor.merge_size**2


def prompt_chunks(tokenizer: Any, processor: Any, png: bytes) -> list[types.ModelInputChunk]:
    """The user turn with the image between the vision markers, and the assistant prompt."""
    before = tokenizer.encode("<|im_start|>user\n<|vision_start|>", add_special_tokens=False)
    after = tokenizer.encode(f"<|vision_end|>{QUESTION}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    image = types.ImageChunk(data=png, format="png", expected_tokens=image_tokens(processor, png))
    return [types.EncodedTextChunk(tokens=before), image, types.EncodedTextChunk(tokens=after)]


def build_datum(tokenizer: Any, processor: Any, png: bytes, label: str) -> types.Datum:
    """Next-token datum: the input drops the last token, targets are shifted by one, weights only on the answer."""
    chunks = prompt_chunks(tokenizer, processor, png)
    answer = tokenizer.encode(f"{label}<|im_end|>", add_special_tokens=False)
    prompt_length = sum(chunk.length for chunk in chunks)
    full_tokens = [*_placeholder_ids(chunks), *answer]
    model_input = types.ModelInput(chunks=[*chunks, types.EncodedTextChunk(tokens=answer[:-1])])
    weights = [0.0] * (prompt_length - 1) + [1.0] * len(answer)
    return types.Datum(
        model_input=model_input,
        loss_fn_inputs={"target_tokens": full_tokens[1:], "weights": weights},
    )


def _placeholder_ids(chunks: list[types.ModelInputChunk]) -> list[int]:
    """The prompt as token ids, an image counting as `expected_tokens` zeros (never a target: weight 0)."""
    ids: list[int] = []
    for chunk in chunks:
        ids.extend(chunk.tokens if isinstance(chunk, types.EncodedTextChunk) else [0] * chunk.length)
    return ids


def mean_nll(result: types.ForwardBackwardOutput, batch: list[types.Datum]) -> float:
    """Loss per answer token: the summed loss over the summed weights."""
    weight = sum(float(sum(datum.loss_fn_inputs["weights"].tolist())) for datum in batch)
    return result.metrics["loss:sum"] / weight


def train(
    training_client: tinker.TrainingClient, tokenizer: Any, processor: Any, steps: int, batch_size: int, lr: float
) -> list[float]:
    """SFT steps on fresh shapes batches; the mean NLL of each step's batch (before its update)."""
    losses = []
    for step in range(steps):
        batch = [build_datum(tokenizer, processor, *shape_image(step * batch_size + i)) for i in range(batch_size)]
        result_future = training_client.forward_backward(batch, "cross_entropy")
        optim_future = training_client.optim_step(types.AdamParams(learning_rate=lr))
        losses.append(mean_nll(result_future.result(), batch))
        optim_future.result()
        print(f"step {step:3d}  nll {losses[-1]:.3f}")
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8100")
    parser.add_argument("--base-model", default="tiny:qwen2_5_vl", help="the [model].name_or_path the service serves")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    service_client = tinker.ServiceClient(base_url=args.base_url)
    training_client = service_client.create_lora_training_client(base_model=args.base_model, rank=args.rank).result()
    tokenizer = training_client.get_tokenizer()
    processor = AutoProcessor.from_pretrained(training_client.get_info().model_data.tokenizer_id)

    losses = train(training_client, tokenizer, processor, args.steps, args.batch_size, args.lr)
    print(f"nll: first step {losses[0]:.3f}, last step {losses[-1]:.3f}")

    saved = training_client.save_weights_for_sampler("shapes-classifier").result()
    print(f"saved sampler weights: {saved.path}")
    sampling_client = service_client.create_sampling_client(model_path=saved.path).result()
    params = types.SamplingParams(max_tokens=4, temperature=0.0)
    for index in range(4):
        png, label = shape_image(index, split="eval")
        prompt = types.ModelInput(chunks=prompt_chunks(tokenizer, processor, png))
        sequence = sampling_client.sample(prompt, 1, params).result().sequences[0]
        print(f"{label:>8} -> {tokenizer.decode(sequence.tokens)!r}  logprobs {[round(x, 2) for x in sequence.logprobs or []]}")
    service_client.close("success").result()


if __name__ == "__main__":
    main()
