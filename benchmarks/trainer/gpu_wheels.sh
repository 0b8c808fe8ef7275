#!/usr/bin/env bash
# The wheels a bare CUDA machine (python 3.12 + torch + transformers, no network) needs to run the GPU benchmarks
# and gpu-marked tests from a plain checkout, at the versions uv.lock pins, into benchmarks/results/wheels
# (git-ignored; ~23 MB), plus wheels of the four Foveal packages built from this checkout. On the GPU machine,
# from the repository root:
#   python3 -m pip install -q --no-deps --target /tmp/whl benchmarks/results/wheels/*.whl
#   export PYTHONPATH=packages/configs/src:packages/renderers/src:packages/verifiers/src:packages/trainer/src:/tmp/whl
# bench_gpu_sft.py needs the first group (pydantic through foveal.configs) and liger-kernel for `kernels = "liger"`;
# bench_gpu_sft_e2e.py (`foveal sft` itself) also the second (progress display, plots, config dump) and the Foveal
# wheels' metadata: the `foveal` command finds its subcommands as entry points. The sources come first on
# PYTHONPATH, so the code that runs is the checkout's even where the Foveal wheels are older.
set -euo pipefail
cd "$(dirname "$0")/../.."
core=(pydantic pydantic-core annotated-types typing-inspection typing-extensions orjson xxhash msgpack liger-kernel)
cli=(rich markdown-it-py mdurl pygments tomli-w matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six)
pins=()
for name in "${core[@]}" "${cli[@]}"; do
    version=$(grep -A1 "^name = \"$name\"$" uv.lock | sed -n 's/^version = "\(.*\)"$/\1/p' | head -1)
    [ -n "$version" ] || { echo "gpu_wheels.sh: $name is not in uv.lock" >&2; exit 1; }
    pins+=("$name==$version")
done
mkdir -p benchmarks/results/wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any --dest benchmarks/results/wheels "${pins[@]}"
uv build --quiet --all-packages --wheel --out-dir benchmarks/results/wheels
ls benchmarks/results/wheels
