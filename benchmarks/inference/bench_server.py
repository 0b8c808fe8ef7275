"""Tokens/s of the embedded transformers server at 1, 8 and 32 concurrent requests, against calling
`model.generate` directly one request at a time: same model, same prompts, same run.

    python benchmarks/inference/bench_server.py                         # tiny Qwen2.5-VL, CPU fp32
    python benchmarks/inference/bench_server.py --hidden 896 --layers 24 --heads 14 --kv-heads 2 \\
        --dtype bfloat16 --max-tokens 128                               # a 0.5B-class text stack, on GPU

The model is the tiny Qwen2.5-VL of `foveal.trainer.tiny_models`, optionally widened and deepened
(`--hidden`, `--layers`, ...) with random weights, so the benchmark runs offline anywhere. Prompts are
distinct random token ids (no prompt-cache hits); every completion samples exactly `--max-tokens` tokens
(`ignore_eos` on the server, `min_new_tokens` for `generate`) at temperature 1. The server is the real
one: HTTP on 127.0.0.1, `httpx.AsyncClient`, continuous batching up to the largest concurrency. Tokens/s
counts completion tokens over the wall time from the first request sent to the last answer received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import start_server
from foveal.trainer.tiny_models import build_tiny_model

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass(frozen=True)
class Row:
    mode: str
    concurrency: int
    requests: int
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds


def build_model(args: argparse.Namespace, folder: Path) -> Path:
    """The tiny Qwen2.5-VL folder, or a random-weight copy with a larger text stack (same tokenizer/processor)."""
    tiny = build_tiny_model("qwen2_5_vl", folder / "tiny")
    if args.hidden is None:
        return tiny
    config = AutoConfig.from_pretrained(tiny)
    text = config.text_config
    head_dim = args.hidden // args.heads
    text.hidden_size, text.num_hidden_layers = args.hidden, args.layers
    text.layer_types = ["full_attention"] * args.layers
    text.num_attention_heads, text.num_key_value_heads = args.heads, args.kv_heads
    text.intermediate_size = args.intermediate or 4 * args.hidden
    text.rope_parameters["mrope_section"] = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    config.vision_config.out_hidden_size = args.hidden
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config)
    out = folder / "scaled"
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny).save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return out


def prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Distinct random prompts of ordinary tokens (ids below the special tokens)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (count, length), generator=generator).tolist()


def bench_generate(folder: Path, args: argparse.Namespace, device: torch.device, batch: list[list[int]]) -> Row:
    """`model.generate` one request at a time, as a user would call it without a server."""
    dtype = getattr(torch, args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).to(device).eval()
    settings = {"max_new_tokens": args.max_tokens, "min_new_tokens": args.max_tokens, "do_sample": True}

    def one(ids: list[int]) -> int:
        tensor = torch.tensor([ids], device=device)
        out = model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), **settings)
        return out.shape[1] - tensor.shape[1]

    one(batch[0])  # warm-up
    _sync(device)
    start = time.perf_counter()
    tokens = sum(one(ids) for ids in batch)
    _sync(device)
    return Row("model.generate", 1, len(batch), tokens, time.perf_counter() - start)


async def bench_server_level(url: str, batch: list[list[int]], concurrency: int, max_tokens: int) -> Row:
    limit = asyncio.Semaphore(concurrency)
    sampling = {"temperature": 1.0, "max_tokens": max_tokens, "ignore_eos": True, "logprobs": True}

    async def one(client: httpx.AsyncClient, index: int, ids: list[int]) -> int:
        async with limit:
            body = {"prompt_token_ids": ids, "sampling": {**sampling, "seed": index}}
            answer = await client.post("/v1/generate", json=body)
            answer.raise_for_status()
            return len(answer.json()["completions"][0]["token_ids"])

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=256)) as client:
        await one(client, len(batch), batch[0])  # warm-up
        start = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(client, i, ids) for i, ids in enumerate(batch))))
        seconds = time.perf_counter() - start
    return Row("server (HTTP)", concurrency, len(batch), tokens, seconds)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def table(rows: list[Row], baseline: Row) -> str:
    lines = [
        "| mode | concurrency | requests | completion tokens | seconds | tokens/s | vs generate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row.tokens_per_s / baseline.tokens_per_s
        lines.append(
            f"| {row.mode} | {row.concurrency} | {row.requests} | {row.completion_tokens} | {row.seconds:.2f} "
            f"| {row.tokens_per_s:.1f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests-per-slot", type=int, default=2, help="requests sent = this x concurrency (min 8)")
    parser.add_argument("--generate-requests", type=int, default=8, help="requests for the model.generate baseline")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--hidden", type=int, default=None, help="widen the text stack (random weights)")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=None)
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON (default: benchmarks/results/inference_<device>.json)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folder = build_model(args, root)
        vocab = AutoProcessor.from_pretrained(folder).tokenizer.vocab_size
        most = max(args.concurrency)
        baseline = bench_generate(folder, args, device, prompts(args.generate_requests, args.prompt_tokens, vocab, 0))
        rows = [baseline]
        config = ServeConfig.model_validate({
            "model": {"name_or_path": str(folder), "dtype": args.dtype},
            "logging": {"run_dir": str(root / "run")},
            "inference": {"device": args.device, "max_batch_size": most, "prompt_cache_entries": 0,
                          "max_model_len": args.prompt_tokens + args.max_tokens + 1},
        })  # fmt: skip
        with start_server(config) as server:
            for concurrency in args.concurrency:
                count = max(8, args.requests_per_slot * concurrency)
                batch = prompts(count, args.prompt_tokens, vocab, seed=concurrency)
                rows.append(asyncio.run(bench_server_level(server.url, batch, concurrency, args.max_tokens)))
            stats = asdict(server.backend.engine.stats)  # type: ignore[attr-defined]
    report = table(rows, baseline)
    print(report)
    environment = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    out = args.out or RESULTS / f"inference_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python benchmarks/inference/bench_server.py " + shlex.join(argv),
        "environment": environment,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "baseline": "model.generate, one request at a time, same model and process",
        "rows": [{**asdict(row), "tokens_per_s": row.tokens_per_s} for row in rows],
        "engine_stats": stats,
        "table": report,
    }
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
