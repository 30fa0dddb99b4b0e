# tram: TRAM and the SAM / trust-region optimizer family on libtorch.
# Every recipe that builds runs `setup` first: PyTorch 2.11.0 in a cache folder provides libtorch.

set shell := ["bash", "-euo", "pipefail", "-c"]

cache := env_var_or_default("TRAM_CACHE", env_var("HOME") / ".cache/tram")

export TRAM_CACHE := cache
export LIBTORCH_USE_PYTORCH := "1"
export PATH := cache / "venv/bin" + ":" + env_var("PATH")

# Run every test of the workspace.
default: test

# Install libtorch (PyTorch 2.11.0 from PyPI) into the cache folder; idempotent.
setup:
    @bash tools/setup.sh

# Run every test of the workspace.
test: setup
    cargo test --workspace

# Per-method step time and optimizer overhead (criterion).
bench: setup
    cargo bench -p tram-core --bench step

# Fine-tune a small model with TRAM in a hand-written loop.
example: setup
    cargo run --release -p tram-core --example finetune

# Regenerate the reference-parity fixtures of tram-core from the Python reference.
reference: setup
    python crates/tram-core/reference/reference_step.py
