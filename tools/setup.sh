#!/usr/bin/env bash
# Installs libtorch for tch 0.24, i.e. PyTorch 2.11.0 from PyPI, into a virtual environment kept in the cache
# folder (${TRAM_CACHE:-~/.cache/tram}/venv), outside the work tree, so every clone reuses it. Idempotent:
# returns at once when the right version is already there.
set -euo pipefail
CACHE="${TRAM_CACHE:-$HOME/.cache/tram}"
VENV="$CACHE/venv"
TORCH_VERSION="2.11.0"

have_torch() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
}

if have_torch; then
    exit 0
fi
mkdir -p "$CACHE"
echo "tram setup: installing torch==$TORCH_VERSION into $VENV (about 4.7 GB, once)" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
have_torch || { echo "tram setup: torch $TORCH_VERSION did not install into $VENV" >&2; exit 1; }
echo "tram setup: done" >&2
