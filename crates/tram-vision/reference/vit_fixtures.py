"""A tiny random ViT in the Hugging Face layout, and its logits, for the Rust parity test (tests/vit_parity.rs).

`transformers.ViTForImageClassification` with a small config (the google/vit-base-patch16-224 key names:
vit.embeddings..., vit.encoder.layer.N.attention.attention.query..., vit.layernorm, classifier), saved with
`save_pretrained` as config.json + model.safetensors, plus random inputs and the logits it computes in eval mode.

    ~/.cache/tram/venv/bin/pip install transformers
    ~/.cache/tram/venv/bin/python crates/tram-vision/reference/vit_fixtures.py
"""

import pathlib

import torch
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/tiny-vit"


def main():
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        qkv_bias=True,
        num_labels=5,
    )
    model = ViTForImageClassification(config).eval()
    # Non-trivial LayerNorm and bias values, so that a wrong key or a skipped term shows in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(OUT, safe_serialization=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    # Another input size: position embeddings interpolated (bicubic), as `interpolate_pos_encoding=True` does.
    x48 = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        logits48 = model(pixel_values=x48, interpolate_pos_encoding=True).logits
    tensors = {"pixel_values": x, "logits": logits, "pixel_values_48": x48, "logits_48": logits48}
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "fixture.safetensors")
    print("wrote", OUT, "logits", tuple(logits.shape))


if __name__ == "__main__":
    main()
