#!/usr/bin/env python3
"""PyTorch-eager peer of Table 4's embedded training step: one step's wall time in float32 and under bfloat16 autocast.

What it measures (issue 18, "CPU speed for the embedded tables"): the wall-clock (and process CPU) time of one
training step of Table 4's embedded task (experiments/table4.toml, profile `embedded`; crates/tram-text/README.md)
written in plain PyTorch eager, for Adam ("base"), SAM (rho = 0.05), TRAM-theta_{t-1} ("tram-prev") and TRAM-x
(sigma = 0.1 Gaussian noise on the token embeddings), each in float32 and under
`torch.autocast("cpu", dtype=torch.bfloat16)` with float32 master weights. It is the yardstick for tram's own
`cargo run --release -p tram-experiments --example step_time -- experiments/table4.toml embedded
--methods base,sam,tram-prev,tram-x`, which times the same step through tch/libtorch.

The step:
  * SmolLM2-135M-Instruct (30 Llama layers, hidden 576, vocabulary 49,152), the embedded Q4_1 GGUF loaded by
    transformers (`gguf_file=`, dequantized to float32), as crates/tram-text/reference/lm_fixtures.py loads it;
  * layers 28 and 29 and the final norm train; the token embeddings and the head tied to them are frozen; the
    output of layers 0..27 is a cached, frozen prefix computed once, in float32, without gradient
    (docs/precision.md: "The frozen prefix ... is computed once, in float32");
  * a batch is 4 blocks x 128 tokens; the loss is the next-token cross-entropy averaged over the 4 x 127
    predicted tokens;
  * Adam, betas (0.9, 0.99), eps 1e-8, no weight decay, the profile's base lr 1e-3 held constant (the profile's
    warm-up and decay change no shape, so no time);
  * the methods' logic is crates/tram-core/reference/reference_step.py's `Trainer`, imported, not rewritten:
    SAM: gradient at theta, eps = rho g/||g||, gradient at theta + eps, restore, step (2F/2B);
    TRAM: gradient at theta, the target's forward without gradient, d = per-token KL(p_target || p_theta)
    averaged over tokens (arXiv 2310.03646 v2 Eq. 6), eps = d T^2 g/||T g|| with T = |theta| + eta, eta = 0.01
    (Eq. 7 with ASAM's eta), gradient at theta + eps, restore, step (3F/2B). TRAM-theta_{t-1}'s target is the
    model at the previous step's parameters; TRAM-x's is the model's own output at x + z, z ~ N(0, 0.1^2) on the
    token embeddings (Sec. 3), for which the frozen layers 0..27 run again on the noised embeddings, no grad.
  * bf16: each forward pass (pass 1, the target's forward, pass 2) runs in its own autocast region, as tram-core
    opens one per pass (docs/precision.md); the logits leave the region in float32, so the cross-entropy is
    float32 (autocast's CPU policy computes it in float32 too) and the KL is float32 ("divergences upcast").

Measured: interleaved rounds, every (method, precision) pair taking one step per round on the same batch, after
2 warm-up rounds; medians over --rounds rounds in this one process, so that other load on the machine weighs on
both precisions alike. Before timing, in float32: the loss at the pre-trained weights and after 3 steps of each
method (each from the pre-trained weights) must be finite, and Adam's must have decreased; the same 3 steps in
bf16 are reported beside them (losses after the steps evaluated in float32; relative difference).

Run from the workspace root, niced, on 2 threads (the default --threads):

    nice -n 10 ~/.cache/tram/venv/bin/python tools/peer/step_peer.py --rounds 10 --out /tmp/step-peer.json

Options: --ids FILE (the 4 x 128 token ids as a JSON list of lists; otherwise drawn from --seed: the time depends
only on the shapes), --rounds N (default 10), --warmup N (default 2), --threads N (default 2), --methods a,b,...,
--lr, --out JSON. Needs torch and transformers 5 (with gguf) and the asset `bash tools/assets.sh lm` fetches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

sys.dont_write_bytecode = True  # importing the reference must leave nothing in the source tree

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "crates", "tram-core", "reference"))
import reference_step as ref  # noqa: E402  (the methods' step, shared with tram-core's parity test)

GGUF_DIR = os.path.join(os.environ.get("TRAM_CACHE", os.path.expanduser("~/.cache/tram")), "assets", "smollm2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOP_LAYERS = 2  # the embedded profile's `trainable = { top-layers = 2 }`
BLOCKS, BLOCK_LEN = 4, 128  # batch_size = 4 blocks of block_len = 128 tokens
METHODS = ["base", "sam", "tram-prev", "tram-x"]
PRECISIONS = ["fp32", "bf16"]
CHECK_STEPS = 3


# ----------------------------------------------------------------------------- the model


class Frozen:
    """The frozen part, shared by every trainer and kept out of their parameter lists (tram's var store likewise
    holds only the trained parameters): token embeddings (also the tied head), layers 0..27, RoPE, the cache."""

    def __init__(self, hf, top: int):
        lm = hf.model
        for p in hf.parameters():
            p.requires_grad_(False)
        self.config = hf.config
        self.embed = lm.embed_tokens.weight  # [V, H]; the head is tied to it
        self.prefix_layers = list(lm.layers[: len(lm.layers) - top])
        self.rotary = lm.rotary_emb
        self.cache: dict[bytes, torch.Tensor] = {}
        for m in [lm.embed_tokens, *self.prefix_layers]:
            m.eval()  # the frozen prefix always runs in eval mode (crates/tram-text/README.md)

    def mask(self, h: torch.Tensor, pos: torch.Tensor):
        # As LlamaModel.forward builds it: None under SDPA without padding, which then runs causally.
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(config=self.config, inputs_embeds=h, attention_mask=None, cache=None,
                                  position_ids=pos)

    def run_prefix(self, h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mask, rope = self.mask(h, pos), self.rotary(h, position_ids=pos)
            for layer in self.prefix_layers:
                h = layer(h, attention_mask=mask, position_embeddings=rope, position_ids=pos)
        return h

    def cached(self, ids: torch.Tensor) -> torch.Tensor:
        """The prefix's output for these blocks: computed once, in float32 (outside any autocast region)."""
        key = ids.numpy().tobytes()
        if key not in self.cache:
            with torch.autocast("cpu", enabled=False):
                self.cache[key] = self.run_prefix(F.embedding(ids, self.embed), positions(ids))
        return self.cache[key]


def positions(ids: torch.Tensor) -> torch.Tensor:
    return torch.arange(ids.shape[1]).unsqueeze(0)


class TopK(nn.Module):
    """The trained top layers and final norm (the only registered parameters), on the frozen prefix's output.

    forward(ids, noise) -> logits of the predicting positions, [blocks x (len - 1), V]; `noise` is
    reference_step.InputNoise, applied to the token embeddings, with the frozen layers run again on x + z."""

    def __init__(self, frozen: Frozen, layers: nn.ModuleList, norm: nn.Module):
        super().__init__()
        import copy

        self.layers = copy.deepcopy(layers)
        self.norm = copy.deepcopy(norm)
        for p in self.parameters():
            p.requires_grad_(True)
        object.__setattr__(self, "frozen", frozen)  # not a submodule: not in named_parameters / named_buffers

    def forward(self, ids: torch.Tensor, noise=None) -> torch.Tensor:
        fz = self.frozen
        pos = positions(ids)
        if noise is None:
            h = fz.cached(ids)
        else:
            # Input noise on the token embeddings (arXiv 2310.03646 v2 Sec. 3, TRAM-x), then the frozen layers again.
            h = fz.run_prefix(noise.apply(F.embedding(ids, fz.embed)), pos)
        mask, rope = fz.mask(h, pos), fz.rotary(h, position_ids=pos)
        for layer in self.layers:
            h = layer(h, attention_mask=mask, position_embeddings=rope, position_ids=pos)
        logits = F.linear(self.norm(h), fz.embed)  # tied head: [B, T, V]
        return logits[:, :-1].reshape(-1, logits.shape[-1])  # position t predicts token t + 1


def load():
    from transformers import AutoModelForCausalLM

    path = os.path.join(GGUF_DIR, GGUF_NAME)
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: run `bash tools/assets.sh lm` first")
    hf = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME, dtype=torch.float32)
    hf.eval()
    return hf


# ----------------------------------------------------------------------------- the trainer


class LmTrainer(ref.Trainer):
    """reference_step.Trainer (the methods' step, unchanged) with each forward in its own autocast region."""

    def __init__(self, model: TopK, method: str, lr: float, bf16: bool):
        adam = lambda ps: torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
        super().__init__(model, ref.METHODS[method], adam, m_sharpness=False)
        self.bf16 = bf16

    def _forward(self, x, micro, noised=False):
        self.model.train()
        self._seed(micro)
        # One region per pass, closed after the pass, as tram-core does (docs/precision.md); float32 logits out, so
        # the cross-entropy and the KL are float32 whatever the precision.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x, self._noise(micro) if noised else None)
        return logits.float()


def fp32_loss(model: TopK, ids: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(ids), targets).item()


# ----------------------------------------------------------------------------- driver


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def loadavg() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ids", help="JSON file: 4 lists of 128 token ids")
    ap.add_argument("--seed", type=int, default=0, help="seed of the drawn ids when --ids is not given")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lr", type=float, default=1e-3, help="the embedded profile's base_lr")
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args()
    methods = args.methods.split(",")
    for m in methods:
        if m not in METHODS:
            sys.exit(f"unknown method {m}; one of {METHODS}")
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}", flush=True)

    t0 = time.perf_counter()
    hf = load()
    cfg = hf.config
    print(f"SmolLM2 loaded in {time.perf_counter() - t0:.1f} s: {cfg.num_hidden_layers} layers, hidden "
          f"{cfg.hidden_size}, vocabulary {cfg.vocab_size}, attention {cfg._attn_implementation}", flush=True)
    frozen = Frozen(hf, TOP_LAYERS)
    n = cfg.num_hidden_layers
    layers, norm = hf.model.layers[n - TOP_LAYERS:], hf.model.norm

    if args.ids:
        with open(args.ids) as f:
            ids = torch.tensor(json.load(f), dtype=torch.int64)
        source = args.ids
    else:
        g = torch.Generator().manual_seed(args.seed)
        ids = torch.randint(0, cfg.vocab_size, (BLOCKS, BLOCK_LEN), generator=g)
        source = f"drawn, seed {args.seed}"
    if tuple(ids.shape) != (BLOCKS, BLOCK_LEN):
        sys.exit(f"--ids must hold {BLOCKS} lists of {BLOCK_LEN} ids, not {tuple(ids.shape)}")
    targets = ids[:, 1:].reshape(-1)
    batch = [(ids, targets)]

    # The split model is the full model: top-k on the cached prefix against transformers' own forward.
    template = TopK(frozen, layers, norm)
    t0 = time.perf_counter()
    frozen.cached(ids)
    prefix_ms = 1e3 * (time.perf_counter() - t0)
    with torch.no_grad():
        full = hf(input_ids=ids).logits[:, :-1].reshape(-1, cfg.vocab_size)
        split = template(ids)
    gap = (full - split).abs().max().item()
    print(f"ids: {source}; prefix (layers 0..{n - TOP_LAYERS - 1}) cached in {prefix_ms:.0f} ms; "
          f"max |logits(top-k on cache) - logits(full model)| = {gap:.2e}", flush=True)
    if not gap <= 1e-3:
        sys.exit("the top-k model on the cached prefix does not reproduce the full model")
    trained = sum(p.numel() for p in template.parameters())
    print(f"trained parameters: {trained:,} (layers {n - TOP_LAYERS}..{n - 1} and the final norm)", flush=True)

    # ---- checks: 3 steps of every method from the pre-trained weights, float32 and bf16
    loss0 = fp32_loss(template, ids, targets)
    print(f"\nloss at the pre-trained weights (fp32): {loss0:.4f}", flush=True)
    checks = {"loss_pretrained": loss0, "methods": {}}
    failed = []
    print(f"{'method':<10} {'prec':<5} {'pass-1 loss per step':<28} {'d per step':<30} "
          f"{'loss after 3 (fp32 eval)':>24}", flush=True)
    for m in methods:
        row = {}
        for prec in PRECISIONS:
            model = TopK(frozen, layers, norm)
            tr = LmTrainer(model, m, args.lr, prec == "bf16")
            reports = [tr.step(batch) for _ in range(CHECK_STEPS)]
            after = fp32_loss(model, ids, targets)
            row[prec] = {"steps": reports, "loss_after": after}
            fmt = lambda v: "-" if v is None or math.isnan(v) else f"{v:.3g}"
            print(f"{m:<10} {prec:<5} {' '.join(format(r['loss'], '.4f') for r in reports):<28} "
                  f"{' '.join(fmt(r['divergence']) for r in reports):<30} {after:>24.4f}", flush=True)
            del tr, model
        a, b = row["fp32"]["loss_after"], row["bf16"]["loss_after"]
        row["bf16_rel_diff"] = abs(b - a) / abs(a)
        if not math.isfinite(a) or not math.isfinite(row["fp32"]["steps"][0]["loss"]):
            failed.append(f"{m}: fp32 loss not finite")
        if m == "base" and not a < loss0:
            failed.append(f"base: fp32 loss after {CHECK_STEPS} steps {a:.4f} is not below {loss0:.4f}")
        checks["methods"][m] = row
    print("bf16 vs fp32, loss after 3 steps (relative): " + ", ".join(
        f"{m} {checks['methods'][m]['bf16_rel_diff']:.2e}" for m in methods), flush=True)
    if failed:
        sys.exit("checks failed: " + "; ".join(failed))
    print("checks passed: every fp32 loss finite, Adam's decreased", flush=True)

    # ---- timing: fresh trainers from the pre-trained weights, interleaved rounds
    trainers = {(m, p): LmTrainer(TopK(frozen, layers, norm), m, args.lr, p == "bf16")
                for m in methods for p in PRECISIONS}
    pairs = list(trainers)
    wall = {k: [] for k in pairs}
    cpu = {k: [] for k in pairs}
    load_during = [loadavg()]
    total = args.warmup + args.rounds
    print(f"\ntiming: {args.warmup} warm-up + {args.rounds} rounds of {len(pairs)} steps, load average "
          f"{load_during[0]}", flush=True)
    for r in range(total):
        t_round = time.perf_counter()
        for k in pairs:
            w0, c0 = time.perf_counter(), time.process_time()
            tr = trainers[k].step(batch)
            w1, c1 = time.perf_counter(), time.process_time()
            if not math.isfinite(tr["loss"]):
                sys.exit(f"{k}: non-finite loss in round {r}")
            if r >= args.warmup:
                wall[k].append(1e3 * (w1 - w0))
                cpu[k].append(1e3 * (c1 - c0))
        load_during.append(loadavg())
        print(f"  round {r + 1}/{total}{' (warm-up)' if r < args.warmup else ''}: "
              f"{time.perf_counter() - t_round:.1f} s, load {load_during[-1][0]:.2f}", flush=True)

    med = lambda v: statistics.median(v)
    rows = []
    for m in methods:
        f32, b16 = med(wall[(m, "fp32")]), med(wall[(m, "bf16")])
        cf, cb = med(cpu[(m, "fp32")]), med(cpu[(m, "bf16")])
        rows.append({"method": m, "fp32_ms": f32, "bf16_ms": b16, "bf16_over_fp32": b16 / f32,
                     "fp32_cpu_ms": cf, "bf16_cpu_ms": cb, "cpu_bf16_over_fp32": cb / cf,
                     "fp32_wall_samples_ms": wall[(m, "fp32")], "bf16_wall_samples_ms": wall[(m, "bf16")],
                     "fp32_cpu_samples_ms": cpu[(m, "fp32")], "bf16_cpu_samples_ms": cpu[(m, "bf16")]})
    print(f"\nwall-clock median over {args.rounds} rounds ({args.threads} threads); CPU = process CPU time "
          f"(all threads)")
    print(f"{'method':<10} {'fp32 ms':>10} {'bf16 ms':>10} {'bf16/fp32':>10} {'fp32 CPU ms':>12} {'bf16 CPU ms':>12} "
          f"{'CPU ratio':>10}")
    for row in rows:
        print(f"{row['method']:<10} {row['fp32_ms']:>10.0f} {row['bf16_ms']:>10.0f} {row['bf16_over_fp32']:>10.3f} "
              f"{row['fp32_cpu_ms']:>12.0f} {row['bf16_cpu_ms']:>12.0f} {row['cpu_bf16_over_fp32']:>10.3f}")
    print(f"load average (1, 5, 15 min) before timing {load_during[0]}, after {load_during[-1]}")

    if args.out:
        result = {"what": "tools/peer/step_peer.py: one training step of Table 4's embedded task in PyTorch eager",
                  "machine": machine(), "args": vars(args), "ids": source, "batch": [BLOCKS, BLOCK_LEN],
                  "top_layers": TOP_LAYERS, "trained_parameters": trained, "prefix_ms": prefix_ms,
                  "split_vs_full_max_abs": gap, "checks": checks, "rows": rows, "loadavg": load_during}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
