"""What an unauthenticated flood costs `foveal serve`: resident memory and health latency while N clients each
send a 60 MiB body to a control route without a token.

    python benchmarks/inference/bench_flood.py                      # 8, 32 and 128 clients, 60 MiB each
    python benchmarks/inference/bench_flood.py --clients 8 --body-mib 60

The server is the real command (`foveal serve`, tiny Qwen2.5-VL on the CPU) in its own process, so its memory
is read from /proc/<pid>/status: VmRSS before and after each flood and VmHWM (the peak resident memory since
the process started; it only grows, so each row's peak is at least the row before's). Every client opens
its own connection, sends the headers (`Content-Length` of the whole body) and then tries to send the whole
body; the server is expected to answer 401 from the headers and close without reading it. Before the request
gate (issue 16) 8 such clients grew the server from 953 to 2,734 MiB and got 400.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from foveal.configs import InferenceConfig, LoggingConfig, ModelConfig, MultimodalConfig
from foveal.trainer.rl.launcher.configs import write_private_toml
from foveal.trainer.serving.config import ServeConfig
from foveal.verifiers.eval.server import free_port

RESULTS = Path(__file__).resolve().parents[1] / "results"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Row:
    clients: int
    body_mib: int
    answers_401: int
    rss_before_mib: float
    rss_after_mib: float
    peak_mib: float
    seconds: float
    health_ms_max: float


def memory_mib(pid: int, key: str) -> float:
    """A `/proc/<pid>/status` memory line (VmRSS, VmHWM), in MiB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(key))
    return int(line.split()[1]) / 1024


def flood_one(port: int, body_bytes: int) -> bytes:
    """One unauthenticated client: headers, then as much of the body as the server takes; the answer it got."""
    head = "POST /control/pause HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {body_bytes}\r\n\r\n"
    chunk = b"{" * CHUNK
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        try:
            for _ in range(body_bytes // CHUNK):
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: what is measured
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
    return answer


def flood(pid: int, port: int, clients: int, body_mib: int) -> Row:
    """`clients` floods at once while /health is polled; the server's memory around them."""
    before, started = memory_mib(pid, "VmRSS"), time.perf_counter()
    health_ms = [0.0]
    with ThreadPoolExecutor(clients) as pool, httpx.Client(timeout=30, trust_env=False) as http:
        answers = [pool.submit(flood_one, port, body_mib * 2**20) for _ in range(clients)]
        while not all(answer.done() for answer in answers):
            clock = time.perf_counter()
            http.get(f"http://127.0.0.1:{port}/health").raise_for_status()
            health_ms.append((time.perf_counter() - clock) * 1000)
            time.sleep(0.05)
        results = [answer.result() for answer in answers]
    return Row(
        clients=clients,
        body_mib=body_mib,
        answers_401=sum(result.startswith(b"HTTP/1.1 401") for result in results),
        rss_before_mib=before,
        rss_after_mib=memory_mib(pid, "VmRSS"),
        peak_mib=memory_mib(pid, "VmHWM"),
        seconds=time.perf_counter() - started,
        health_ms_max=max(health_ms),
    )


def serve(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`foveal serve` on a free loopback port with a token, ready (answers /health)."""
    port = free_port("127.0.0.1")
    config = ServeConfig(
        model=ModelConfig(name_or_path="tiny:qwen2_5_vl"),
        multimodal=MultimodalConfig(offload_dir=folder / "assets"),
        logging=LoggingConfig(run_dir=folder / "server"),
        inference=InferenceConfig(port=port, device="cpu"),
    )
    path = write_private_toml(folder / "serve.toml", config, {("inference", "api_token"): SecretStr("flood-bench")})
    log = (folder / "serve.log").open("wb")
    env = {**os.environ, "HOME": str(folder), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "foveal.configs", "serve", "--config", str(path)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"foveal serve exited with {process.returncode}; see {folder / 'serve.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code == 200:
                return process, port
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("foveal serve did not answer /health within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--body-mib", type=int, default=60)
    parser.add_argument("--json", type=Path, default=RESULTS / "flood.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        process, port = serve(Path(tmp))
        try:
            rows = [flood(process.pid, port, clients, args.body_mib) for clients in args.clients]
        finally:
            process.terminate()
            process.wait(timeout=60)

    columns = "401 answers | RSS before MiB | RSS after MiB | peak RSS MiB | seconds | max health ms"
    print(f"| clients x {args.body_mib} MiB | {columns} |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.clients} | {row.answers_401}/{row.clients} | {row.rss_before_mib:,.0f} | "
            f"{row.rss_after_mib:,.0f} | {row.peak_mib:,.0f} | {row.seconds:.1f} | {row.health_ms_max:.0f} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "python": platform.python_version(), "rows": [asdict(r) for r in rows]}
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
