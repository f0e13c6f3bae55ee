#!/usr/bin/env bash
# Create .venv and install the pinned stack (CPU torch here; see docs/full_size.md, "Installing", for GPU and Ascend).
# Safe to run again: it only reinstalls when requirements.txt or pyproject.toml changed.
#   PYTHON=python3.11 VENV=.venv TORCH_SPEC="torch==2.13.0" bash tools/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[install] torch ($TORCH_SPEC) ..."
  # torch first and on its own, so that no later package can pull a different (CUDA) build.
  "$VENV/bin/pip" install -q --disable-pip-version-check $TORCH_SPEC
  echo "[install] requirements.txt ..."
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

# The real Qwen2.5 tokenizer, written once from the vocabulary the dashscope wheel ships on PyPI.
if [ ! -f conf/qwen2.5-3b-instruct/tokenizer.json ]; then
  echo "[install] Qwen2.5 tokenizer -> conf/qwen2.5-3b-instruct ..."
  "$VENV/bin/python" -m osum_echat.tools.qwen_tokenizer --out conf/qwen2.5-3b-instruct \
    || echo "[install] warning: no Qwen2.5 tokenizer written; see conf/qwen2.5-3b-instruct/README.md"
fi

# Debian packages some parts need (optional for everything else): installed when run as root.
debian_tool() {  # command package what-for what-without
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install] $2 ($3) ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null) \
      || echo "[install] warning: could not install $2; $4"
  else
    echo "[install] note: install $2 (e.g. sudo apt-get install $2) for $3"
  fi
}
debian_tool espeak-ng espeak-ng "the demo recipe's speech" "the demo recipe needs it"
debian_tool chromium chromium "the browser tests (web demo, realtime page)" "the browser tests will skip"
debian_tool soxi sox "the wav header check" "the soxi header test will skip"
"$VENV/bin/python" -c "import torch, transformers; print('[install] ok: torch', torch.__version__, '| transformers', transformers.__version__)"
