"""What autograd keeps for one GPT-2 layer's backward on the CPU, measured: the tensors a forward saves (through
`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters left out), beside the activation model of
`tram plan` (crates/tram-task/src/shape.rs: `Stack`, `Attention::kept_matrices`). The layer is written with the ops
tram's GPT-2 uses (crates/tram-text/src/gpt2.rs): LayerNorm, Conv1D as matmul + bias, libtorch's
scaled_dot_product_attention (causal), the tanh GELU, residual dropout.

    python tools/plan_saved.py            # GPT-2 base's layer at 1,024 tokens, dropout 0.1 and 0.0

Measured (PyTorch 2.11, CPU): 213.9 MB with dropout, 50.4 MB without: with dropout the CPU's attention keeps three
T×T matrices per head (the softmax's output, the dropout's noise as floats, the dropped probabilities), not the
2.25 of CUDA's byte mask, and the residual dropouts keep their noise as floats too.
"""
import torch
import torch.nn.functional as F

D, HEADS, INNER, T = 768, 12, 3072, 1024


def saved_bytes(fn, params):
    seen = {}
    own = {p.untyped_storage().data_ptr() for p in params}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def main():
    torch.manual_seed(0)
    p = lambda *shape: (torch.randn(*shape) * 0.02).requires_grad_()  # noqa: E731
    ln1w, ln1b, ln2w, ln2b = p(D), p(D), p(D), p(D)
    wa, ba, wo, bo, wf, bf, wp, bp = p(D, 3 * D), p(3 * D), p(D, D), p(D), p(D, INNER), p(INNER), p(INNER, D), p(D)
    params = [ln1w, ln1b, ln2w, ln2b, wa, ba, wo, bo, wf, bf, wp, bp]
    h = torch.randn(1, T, D, requires_grad=True)

    def layer(drop):
        x = F.layer_norm(h, (D,), ln1w, ln1b, 1e-5)
        q, k, v = (x @ wa + ba).split(D, -1)
        heads = lambda y: y.view(1, T, HEADS, D // HEADS).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), dropout_p=drop, is_causal=True)
        a = a.transpose(1, 2).reshape(1, T, D) @ wo + bo
        hh = h + F.dropout(a, drop, True)
        x = F.layer_norm(hh, (D,), ln2w, ln2b, 1e-5)
        m = F.gelu(x @ wf + bf, approximate="tanh") @ wp + bp
        return hh + F.dropout(m, drop, True)

    matrix = HEADS * T * T * 4
    for drop in (0.1, 0.0):
        measured = saved_bytes(lambda: layer(drop), params)
        kept = 3.0 if drop else 0.0
        masks = 2 * D if drop else 0
        planned = T * (9 * D + 2 * INNER + masks) * 4 + kept * matrix
        print(f"dropout {drop}: saved {measured / 1e6:.1f} MB a layer, tram plan's model {planned / 1e6:.1f} MB "
              f"(T×T matrices beyond the token-wise tensors: {(measured - T * (9 * D + 2 * INNER + masks) * 4) / matrix:.2f})")


if __name__ == "__main__":
    main()
