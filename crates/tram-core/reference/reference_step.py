#!/usr/bin/env python3
"""Independent PyTorch reference for one training step of every method in tram-core.

Written from the step protocol (not from the Rust code): a tiny float64 classifier
(Linear 4->8, BatchNorm1d(8), tanh, Linear 8->3) is trained for 3 steps by every method,
with torch.optim.SGD / Adam / AdamW as the base optimizers. After every step the script
records all parameters and batch-norm buffers and the reported scalars (pass-1 loss,
divergence d, ||eps||_2). Everything goes to one small float64 safetensors file that
`tests/reference_parity.rs` compares the Rust step driver against.

Run (from the workspace root):

    ~/.cache/tram/venv/bin/python crates/tram-core/reference/reference_step.py

Fixture layout (all float64 unless noted):
    init.<var>                     initial parameters and buffers
    data.x [3, 6, 4], data.y [3, 6] (int64)   one batch per step
    <case>.<var> [3, ...]          the variable after steps 0, 1, 2
    <case>.loss / .divergence / .eps_norm [3]   reported scalars (NaN = not reported)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import save_file

DTYPE = torch.float64
CONFIG_SEED = 0
DATA_SEED = 20240611
STEPS = 3
ROWS = 6
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")

# Paper defaults used by the fixture.
SAM_RHO = 0.05
ASAM_RHO, ASAM_ETA = 0.5, 0.01
FSAM_GAMMA, FSAM_ETA = 0.1, 0.1
TRAM_ETA = 0.01
SIGMA = 0.1
LAMBDA = 0.1
MESA_DECAY = 0.999
TRAM_EMA_DECAY = 0.5  # the fixture's override, so that the EMA visibly moves in 3 steps
TINY = 1e-12


def forward_seed(seed: int, step: int, micro: int, stream: int) -> int:
    return (seed % 10**6) * 10**9 + step * 1000 + 2 * micro + stream


# ----------------------------------------------------------------------------- model


class InputNoise:
    """x + z with its own seed, then the generator is put back on the forward's seed."""

    def __init__(self, sigma: float, kind: str, step: int, micro: int):
        self.sigma, self.kind = sigma, kind
        self.seed = forward_seed(CONFIG_SEED, step, micro, 1)
        self.resume = forward_seed(CONFIG_SEED, step, micro, 0)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(self.seed)
        if self.kind == "gaussian":
            z = torch.randn_like(x) * self.sigma
        else:
            z = (torch.rand_like(x) * 2 - 1) * self.sigma
        torch.manual_seed(self.resume)
        return x + z


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8, dtype=DTYPE)
        self.bn = nn.BatchNorm1d(8, eps=1e-5, momentum=0.1, dtype=DTYPE)
        self.fc2 = nn.Linear(8, 3, dtype=DTYPE)

    def forward(self, x: torch.Tensor, noise: Optional[InputNoise] = None) -> torch.Tensor:
        if noise is not None:
            x = noise.apply(x)
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


def state_of(model: Net) -> dict[str, torch.Tensor]:
    out = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- divergences


def kl(target_logits: torch.Tensor, current_logits: torch.Tensor) -> torch.Tensor:
    """mean over rows of KL(P_target || P_current)."""
    lt = F.log_softmax(target_logits, dim=-1)
    lc = F.log_softmax(current_logits, dim=-1)
    return (lt.exp() * (lt - lc)).sum(-1).mean()


def kl_symmetric(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return kl(a, b) + kl(b, a)


# ----------------------------------------------------------------------------- methods


@dataclass
class Spec:
    ascent: Optional[str] = None  # "sam" | "asam" | "fisher" | "tram"
    rho: float = 0.0
    eta: float = 0.0
    radius_target: Optional[str] = None  # TRAM: "prev" | "pretrained" | "ema" | "noise"
    reg_target: Optional[str] = None  # regulariser: "prev" | "ema" | "noise"
    pass1_noise: bool = False  # TRAM-Fisher: pass 1 on x + z
    decay: float = MESA_DECAY


METHODS: dict[str, Spec] = {
    "base": Spec(),
    "sam": Spec(ascent="sam", rho=SAM_RHO),
    "asam": Spec(ascent="asam", rho=ASAM_RHO, eta=ASAM_ETA),
    "fsam": Spec(ascent="fisher", rho=FSAM_GAMMA, eta=FSAM_ETA),
    "tram-prev": Spec(ascent="tram", eta=TRAM_ETA, radius_target="prev"),
    "tram-pretrained": Spec(ascent="tram", eta=TRAM_ETA, radius_target="pretrained"),
    "tram-ema": Spec(ascent="tram", eta=TRAM_ETA, radius_target="ema", decay=TRAM_EMA_DECAY),
    "tram-x": Spec(ascent="tram", eta=TRAM_ETA, radius_target="noise"),
    "tram-fisher": Spec(ascent="fisher", rho=FSAM_GAMMA, eta=FSAM_ETA, pass1_noise=True),
    "trpo": Spec(reg_target="prev"),
    "r3f": Spec(reg_target="noise"),
    "mesa": Spec(reg_target="ema"),
    "asam-trpo": Spec(ascent="asam", rho=ASAM_RHO, eta=ASAM_ETA, reg_target="prev"),
    "asam-r3f": Spec(ascent="asam", rho=ASAM_RHO, eta=ASAM_ETA, reg_target="noise"),
    "asam-mesa": Spec(ascent="asam", rho=ASAM_RHO, eta=ASAM_ETA, reg_target="ema"),
}


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=1e-4)


def adam(params):
    return torch.optim.Adam(params, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-4)


def adamw(params):
    return torch.optim.AdamW(params, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)


@dataclass
class Case:
    name: str
    method: str
    optimizer: Callable = sgd
    micro: int = 1  # micro-batches per step
    m_sharpness: bool = False


CASES: list[Case] = [Case(m, m) for m in METHODS] + [
    Case("tram-prev-adam", "tram-prev", optimizer=adam),
    Case("sam-adamw", "sam", optimizer=adamw),
    Case("sam-accum", "sam", micro=2),
    Case("sam-msharp", "sam", micro=2, m_sharpness=True),
    Case("tram-prev-msharp", "tram-prev", micro=2, m_sharpness=True),
]


# ----------------------------------------------------------------------------- the step


class Trainer:
    """Runs the step protocol of one method on a model, with a persistent torch.optim optimizer."""

    def __init__(self, model: Net, spec: Spec, optimizer: Callable, m_sharpness: bool):
        self.model, self.spec, self.m_sharpness = model, spec, m_sharpness
        self.params = [p for _, p in sorted(model.named_parameters())]
        self.buffers = [b for n, b in sorted(model.named_buffers()) if not n.endswith("num_batches_tracked")]
        self.opt = optimizer(self.params)
        self.step_index = 0
        init = self._copy(self.params)
        self.theta_prev = init  # θ_{t−1}; θ_0 at t = 0
        self.theta_0 = self._copy(self.params)
        self.ema = self._copy(self.params)

    # -- helpers
    @staticmethod
    def _copy(ts):
        return [t.detach().clone() for t in ts]

    @staticmethod
    @torch.no_grad()
    def _load(dst, src):
        for d, s in zip(dst, src):
            d.copy_(s)

    def _restore_buffers(self, src):
        # Through .data: a train-mode batch-norm backward does not read the running statistics, but autograd
        # saved them and would refuse a backward after a plain in-place copy (R3F restores them between its
        # forwards and the backward).
        for d, s in zip(self.buffers, src):
            d.data.copy_(s)

    def _seed(self, micro: int):
        torch.manual_seed(forward_seed(CONFIG_SEED, self.step_index, micro, 0))

    def _noise(self, micro: int) -> InputNoise:
        return InputNoise(SIGMA, "gaussian", self.step_index, micro)

    def _forward(self, x, micro, noised=False):
        self.model.train()
        self._seed(micro)
        return self.model(x, self._noise(micro) if noised else None)

    def _param_target(self, which: str):
        return {"prev": self.theta_prev, "pretrained": self.theta_0, "ema": self.ema}[which]

    def _target_logits(self, which: str, x, micro):
        """Output of the target parameters, no grad, train mode; buffers and θ left as they were."""
        bufs = self._copy(self.buffers)
        theta = self._copy(self.params)
        with torch.no_grad():
            self._load(self.params, self._param_target(which))
            out = self._forward(x, micro)
            self._load(self.params, theta)
        self._restore_buffers(bufs)
        return out

    def _objective(self, x, y, micro, target_cache, noised_input=False):
        """(logits, CE, d or None, objective) of one forward, regulariser included."""
        reg = self.spec.reg_target
        if reg in ("prev", "ema") and target_cache[micro] is None:
            target_cache[micro] = self._target_logits(reg, x, micro)
        logits = self._forward(x, micro, noised=noised_input)
        ce = F.cross_entropy(logits, y)
        d = None
        objective = ce
        if reg == "noise":
            bufs = self._copy(self.buffers)
            noised = self._forward(x, micro, noised=True)
            self._restore_buffers(bufs)
            d = kl_symmetric(noised, logits)
        elif reg is not None:
            d = kl(target_cache[micro], logits)
        if d is not None:
            objective = ce + LAMBDA * d
        return logits, ce, d, objective

    def _eps(self, grads, radius):
        s = self.spec
        with torch.no_grad():
            if s.ascent == "sam":
                norm = torch.sqrt(sum((g * g).sum() for g in grads))
                return [s.rho * g / (norm + TINY) for g in grads]
            if s.ascent in ("asam", "tram"):
                r = s.rho if s.ascent == "asam" else radius
                ts = [p.abs() + s.eta for p in self.params]
                norm = torch.sqrt(sum(((t * g) ** 2).sum() for t, g in zip(ts, grads)))
                return [r * t * t * g / (norm + TINY) for t, g in zip(ts, grads)]
            if s.ascent == "fisher":
                fs = [1 + s.eta * g * g for g in grads]
                norm = torch.sqrt(sum((g * g / f).sum() for g, f in zip(grads, fs)))
                return [s.rho * (g / f) / (norm + TINY) for g, f in zip(grads, fs)]
        raise ValueError(s.ascent)

    def step(self, micro_batches):
        s = self.spec
        sizes = [x.shape[0] for x, _ in micro_batches]
        total = sum(sizes)
        n = len(micro_batches)
        theta_save = self._copy(self.params)
        self.opt.zero_grad(set_to_none=True)
        groups = [[i] for i in range(n)] if (self.m_sharpness and s.ascent) else [list(range(n))]
        target_cache = [None] * n
        loss = 0.0
        divergences, eps_norms = [], []
        accumulated = None

        for group in groups:
            group_total = sum(sizes[i] for i in group)
            # pass 1
            logits1 = {}
            d_reg = None
            for i in group:
                x, y = micro_batches[i]
                w = sizes[i] / group_total if s.ascent else sizes[i] / total
                logits, ce, d, objective = self._objective(x, y, i, target_cache, noised_input=s.pass1_noise)
                (objective * w).backward()
                loss += ce.item() * sizes[i] / total
                if d is not None:
                    d_reg = (d_reg or 0.0) + d.item() * sizes[i] / group_total
                logits1[i] = logits.detach()
            if s.ascent is None:
                if d_reg is not None:
                    divergences.append(d_reg)
                continue
            after_pass1 = self._copy(self.buffers)
            # TRAM radius
            radius = None
            if s.radius_target is not None:
                radius = torch.zeros((), dtype=DTYPE)
                for i in group:
                    x, _ = micro_batches[i]
                    if s.radius_target == "noise":
                        with torch.no_grad():
                            target = self._forward(x, i, noised=True)
                    else:
                        target = self._target_logits(s.radius_target, x, i)
                    radius = radius + kl(target, logits1[i]) * sizes[i] / group_total
                self._restore_buffers(after_pass1)
                divergences.append(radius.item())
            elif d_reg is not None:
                divergences.append(d_reg)
            # ascent
            grads = [p.grad.detach().clone() for p in self.params]
            eps = self._eps(grads, radius)
            eps_norms.append(math.sqrt(sum((e * e).sum().item() for e in eps)))
            with torch.no_grad():
                for p, e in zip(self.params, eps):
                    p.add_(e)
            self.opt.zero_grad(set_to_none=True)
            # pass 2 at θ + ε
            for i in group:
                x, y = micro_batches[i]
                _, _, _, objective = self._objective(x, y, i, target_cache)
                (objective * (sizes[i] / total)).backward()
            self._load(self.params, theta_save)
            self._restore_buffers(after_pass1)
            if len(groups) > 1:
                g = [p.grad.detach().clone() for p in self.params]
                accumulated = g if accumulated is None else [a + b for a, b in zip(accumulated, g)]
                self.opt.zero_grad(set_to_none=True)

        if accumulated is not None:
            for p, g in zip(self.params, accumulated):
                p.grad = g
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        # target updates
        self.theta_prev = theta_save
        with torch.no_grad():
            for e, p in zip(self.ema, self.params):
                e.mul_(s.decay).add_(p.detach() * (1 - s.decay))
        self.step_index += 1
        mean = lambda v: sum(v) / len(v) if v else float("nan")
        return {"loss": loss, "divergence": mean(divergences), "eps_norm": mean(eps_norms)}


# ----------------------------------------------------------------------------- driver


def make_data():
    torch.manual_seed(DATA_SEED)
    model = Net()
    init = state_of(model)
    xs = torch.randn(STEPS, ROWS, 4, dtype=DTYPE)
    ys = torch.randint(0, 3, (STEPS, ROWS), dtype=torch.int64)
    return init, xs, ys


def run_case(case: Case, init, xs, ys):
    model = Net()
    model.load_state_dict({**model.state_dict(), **init})
    trainer = Trainer(model, METHODS[case.method], case.optimizer, case.m_sharpness)
    states, scalars = [], []
    for t in range(STEPS):
        x, y = xs[t], ys[t]
        rows = ROWS // case.micro
        micro = [(x[k * rows:(k + 1) * rows], y[k * rows:(k + 1) * rows]) for k in range(case.micro)]
        scalars.append(trainer.step(micro))
        states.append(state_of(model))
    return states, scalars


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    init, xs, ys = make_data()
    tensors = {f"init.{k}": v for k, v in init.items()}
    tensors["data.x"] = xs
    tensors["data.y"] = ys
    summary = {}
    for case in CASES:
        states, scalars = run_case(case, init, xs, ys)
        for k in init:
            stacked = torch.stack([s[k] for s in states])
            tensors[f"{case.name}.{k}"] = stacked
        moved = max((states[-1][k] - init[k]).abs().max().item() for k in init)
        for key in ("loss", "divergence", "eps_norm"):
            tensors[f"{case.name}.{key}"] = torch.tensor([sc[key] for sc in scalars], dtype=DTYPE)
        reported = [{k: (None if math.isnan(v) else v) for k, v in sc.items()} for sc in scalars]
        summary[case.name] = {"method": case.method, "micro_batches": case.micro, "m_sharpness": case.m_sharpness,
                              "scalars": reported, "max_param_change": moved}
        print(f"{case.name:18s} moved {moved:.3e}  " + "  ".join(
            f"[loss {sc['loss']:.6f} d {sc['divergence']:.3e} |eps| {sc['eps_norm']:.3e}]" for sc in scalars))
    os.makedirs(OUT, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}
    # One metadata key: the writer stores metadata in a hash map, so several keys would come out in random order.
    meta = {"reference": json.dumps({"generator": "crates/tram-core/reference/reference_step.py", "torch": torch.__version__,
                                     "cases": [c.name for c in CASES]}, sort_keys=True)}
    save_file(tensors, os.path.join(OUT, "reference.safetensors"), metadata=meta)
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": summary}, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
