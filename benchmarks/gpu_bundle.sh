#!/usr/bin/env bash
# Prepare .gpu_bundle/ (git-ignored, ~10 MB) for `rlcustom bench gpu_check` on a GPU machine WITHOUT
# network whose Python already has torch, transformers, peft, accelerate, safetensors, numpy (docs/gpu-check.md):
#   wheels/  DeepSpeed 0.19.8 as a pure-Python wheel built here from its sdist (its ops are compiled on first
#            use, and the check uses none: torch's AdamW, no offload) and the wheels of its dependencies for
#            CPython 3.12 on x86-64 Linux, at the versions of cluster/requirements-cpu.txt; there they are
#            unpacked into a folder of their own (pip install --no-deps --target) put first on PYTHONPATH.
#   cache/   the SmolLM2 tokenizer the tiny and smollm2-135m-config models use (point RLCUSTOM_CACHE at it).
# Usage: benchmarks/gpu_bundle.sh   (from a checkout with its .venv; PYTHON=... to use another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=.gpu_bundle
rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/cache"
DS_BUILD_OPS=0 "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT/wheels" deepspeed==0.19.8
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$OUT/wheels" \
    hjson==3.1.0 msgpack==1.2.4 ninja==1.13.2 py-cpuinfo==9.0.0 einops==0.8.2 psutil==7.2.2 \
    pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
"$PY" - "$OUT/cache" <<'EOF'
import shutil, sys
from rlcustom.models.embedded import embedded_tokenizer_dir
src = embedded_tokenizer_dir()
shutil.copytree(src, f"{sys.argv[1]}/{src.name}")
EOF
ls -l "$OUT/wheels"
du -sh "$OUT"
