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

# espeak-ng synthesises the demo recipe's speech (recipes/demo); optional for everything else.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install] espeak-ng (demo speech) ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
      || echo "[install] warning: could not install espeak-ng; the demo recipe needs it"
  else
    echo "[install] note: install espeak-ng (e.g. sudo apt-get install espeak-ng) to run the demo recipe"
  fi
fi
# Chromium (Debian package) drives the web demo's browser test through playwright; optional otherwise.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install] chromium (web demo browser test) ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[install] warning: could not install chromium; the browser test will skip"
  else
    echo "[install] note: install chromium (e.g. sudo apt-get install chromium) to run the browser test"
  fi
fi
# sox (soxi) reads the wavs the tools write; the tests check their headers with it; optional otherwise.
if ! command -v soxi >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install] sox (soxi: wav header check) ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sox >/dev/null) \
      || echo "[install] warning: could not install sox; the soxi header test will skip"
  else
    echo "[install] note: install sox (e.g. sudo apt-get install sox) to check wav headers with soxi"
  fi
fi
"$VENV/bin/python" -c "import torch, transformers; print('[install] ok: torch', torch.__version__, '| transformers', transformers.__version__)"
