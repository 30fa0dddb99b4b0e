# tram: TRAM and the SAM / trust-region optimizer family on libtorch.
# Every recipe that builds runs `setup` first: PyTorch 2.11.0 in a cache folder provides libtorch.

set shell := ["bash", "-euo", "pipefail", "-c"]

cache := env_var_or_default("TRAM_CACHE", env_var("HOME") / ".cache/tram")

export TRAM_CACHE := cache
export LIBTORCH_USE_PYTORCH := "1"
export PATH := cache / "venv/bin" + ":" + env_var("PATH")

# The paper's tables this repository reproduces (experiments/<table>.toml), and those in the CI regression.
tables := "table2 table3 table4 table5 table6"
regress_tables := "table2 table3 table4 table5 table6"

# Run every test of the workspace.
default: test

# Install libtorch (PyTorch 2.11.0 from PyPI) into the cache folder; idempotent.
setup:
    @bash tools/setup.sh

# Run every test of the workspace.
test: setup assets
    cargo test --workspace

# tram-core's tests alone (no assets needed): the inner loop when working on the optimizers.
test-core: setup
    cargo test -p tram-core

# Formatting, lints and the Markdown files' relative links, as CI runs them.
lint: links setup
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Every relative link (and #anchor) in the repository's Markdown files resolves; no build, Python 3 only.
links:
    python3 tools/check-links.py --self-test
    python3 tools/check-links.py

# Fetch the offline weights and data of the embedded experiments into the cache folder; idempotent.
assets *GROUPS:
    @bash tools/assets.sh {{GROUPS}}

# Build the `tram` runner (release).
build: setup
    cargo build --release -p tram-experiments

# One of the paper's tables on the embedded task (offline, CPU): `just reproduce table3 --profile quick`.
reproduce TABLE *ARGS: setup assets build
    @echo "{{tables}}" | tr ' ' '\n' | grep -qx "{{TABLE}}" || { echo "unknown table {{TABLE}}; expected one of: {{tables}}" >&2; exit 1; }
    ./target/release/tram run experiments/{{TABLE}}.toml {{ARGS}}

# Paper Table 2 (TRAM variants: passes, step time, memory) on the embedded task: results/table2-embedded.csv.
reproduce-table2 *ARGS: (reproduce "table2" ARGS)

# Paper Table 3 analogue (EfficientNet-Lite0 on emoji styles): results/table3-embedded.csv.
reproduce-table3 *ARGS: (reproduce "table3" ARGS)

# Paper Table 4 analogue (SmolLM2-135M on Brown corpus genres, perplexity): results/table4-embedded.csv.
reproduce-table4 *ARGS: (reproduce "table4" ARGS)

# Paper Table 5 analogue (multilingual-e5-small on the installation guide in 19 languages): results/table5-embedded.csv.
reproduce-table5 *ARGS: (reproduce "table5" ARGS)

# Paper Table 6 analogue (ε-sharpness and CKA of Table 5's fine-tuned models), after reproduce-table5 with the same
# profile: results/table6-embedded.csv.
reproduce-table6 *ARGS: (reproduce "table6" ARGS)

# What this machine offers: libtorch, CUDA, assets.
doctor: setup build
    ./target/release/tram doctor

# CI regression: the quick profiles (seed 0), each metric within its tolerance in tests/regression/: counts exactly,
# the first steps' losses and norms to rounding, outcomes to their spread over seeds (docs/regression.md).
regress: setup assets
    cargo build -p tram-experiments
    rm -rf target/regress
    for t in {{regress_tables}}; do ./target/debug/tram run experiments/$t.toml --profile quick --results target/regress --device cpu; done
    for t in {{regress_tables}}; do ./target/debug/tram check target/regress/$t-quick-long.csv tests/regression/$t-quick-long.csv; done

# Regenerate the regression expectations after a deliberate change: the quick profiles over 5 seeds give each
# outcome's seed spread; seed 0's values become the expectations.
regress-update: setup assets
    cargo build -p tram-experiments
    rm -rf target/regress-calibration
    for t in {{regress_tables}}; do \
        if [ "$t" = table6 ]; then s='runs.set=["seeds=[0,1,2,3,4]"]'; else s='seeds=[0,1,2,3,4]'; fi; \
        ./target/debug/tram run experiments/$t.toml --profile quick --set "$s" --results target/regress-calibration --device cpu; \
    done
    mkdir -p tests/regression
    for t in {{regress_tables}}; do ./target/debug/tram expectations target/regress-calibration/$t-quick-long.csv --seed 0 --out tests/regression/$t-quick-long.csv; done

# Bad inputs a hostile user would try, each against the clear error or the recorded outcome it must have
# (tools/hostile.sh; about 5 minutes, not in CI).
hostile: setup assets
    cargo build -p tram-experiments
    TRAM="${CARGO_TARGET_DIR:-target}/debug/tram" bash tools/hostile.sh

# Slurm for real (root, Debian; not in CI): a one-node cluster on this machine runs the quick Table 3 profile as a
# job array of 4 tasks; its tables must equal one process's, and no run may be trained twice.
test-slurm: setup assets
    cargo build -p tram-experiments
    TRAM="${CARGO_TARGET_DIR:-target}/debug/tram" bash tools/test-slurm.sh

# Where `just rehearse` writes (override: `just rehearse_dir=/data/r rehearse`, or TRAM_REHEARSE).
rehearse_dir := env_var_or_default("TRAM_REHEARSE", cache / "rehearse")

# Stand-ins for the paper profiles' downloads (tools/rehearse/README.md): random GPT-2 base and XL, XLM-R base and
# ViT-B/16 with the Hub's configurations and files, random M2D2, MultiNLI, XNLI and image data in the Hub's layouts
# (8.5 GB, 6.4 of them GPT-2 XL); folders already written are skipped. `just rehearse gpt2 m2d2`: only those.
rehearse *NAMES: setup
    python -c "import tokenizers, transformers, pyarrow, PIL" 2>/dev/null || pip install --quiet --disable-pip-version-check transformers==5.24.0 tokenizers==0.23.3 pyarrow==26.0.1 pillow==13.0.0
    python tools/rehearse/paper_shapes.py --out "{{rehearse_dir}}" {{NAMES}}

# The CPU rehearsal at the paper's shapes (not in CI; about 15 minutes on a 2-core machine): GPT-2 base on
# 1,024-token blocks, XLM-R base and ViT-B/16, random weights, trained in full for a few steps per method (default
# base and tram-prev), each run's peak tensor and resident memory against `tram plan --device cpu`, one GPT-2 run
# killed after its first checkpoint and resumed: results/rehearsal-cpu.csv (tools/rehearse/run.sh).
rehearse-run *METHODS: build (rehearse "gpt2" "m2d2" "xlm-roberta-base" "multi_nli" "xnli" "vit-base-patch16-224" "cifar100")
    nice -n 10 bash tools/rehearse/run.sh "{{rehearse_dir}}" {{METHODS}}

# The folder `just gpu-check` reads (configurations, tokenizers, tiny data; no weights: 8.7 MB), from the rehearsal's.
gpu-check-prepare: setup
    just rehearse gpt2 m2d2 vit-base-patch16-224 cifar100
    rm -rf target/gpu-check && mkdir -p target/gpu-check/gpt2 target/gpu-check/vit-base-patch16-224
    cp "{{rehearse_dir}}"/gpt2/{config.json,tokenizer.json} target/gpu-check/gpt2/
    cp "{{rehearse_dir}}"/vit-base-patch16-224/{config.json,preprocessor_config.json} target/gpu-check/vit-base-patch16-224/
    cp -r "{{rehearse_dir}}"/m2d2 "{{rehearse_dir}}"/cifar100 target/gpu-check/
    du -sh target/gpu-check

# On a machine with an NVIDIA GPU, in under 10 minutes, with a prebuilt `tram` (TRAM=...) and the folder
# `just gpu-check-prepare` wrote (GPU_CHECK_DIR=...): the device, CUDA against the CPU on the first steps, step time
# and peak CUDA memory per method in fp32 / TF32 / bf16 at the paper's shapes: results/gpu-check.csv
# (tools/gpu-check.sh). Without CUDA: one line, exit 1, nothing written.
gpu-check:
    bash tools/gpu-check.sh

# Per-method step time and optimizer overhead (criterion).
bench: setup
    cargo bench -p tram-task --bench step

# Fine-tune a small model with TRAM in a hand-written loop.
example: setup
    cargo run --release -p tram-core --example finetune

# Regenerate the reference-parity fixtures of tram-core from the Python reference.
reference: setup
    python crates/tram-core/reference/reference_step.py
