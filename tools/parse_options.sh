#!/usr/bin/env bash
# Source this after setting defaults: every `--name value` (or `--name=value`) on the
# command line overrides the shell variable `name` (dashes read as underscores), e.g.
#   stage=0; nj=4; . tools/parse_options.sh
#   bash run.sh --stage 2 --nj=8
# Only variables that already exist can be set, so a typo is an error, not a silent no-op.
# `--help` prints $help_message (if the script defines one).
# Positional arguments after the options are left in "$@".

_po_usage() {
  echo "${help_message:-usage: $0 [--variable value ...]}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _po_usage; exit 0 ;;
    --*=*) _po_name="${1%%=*}"; _po_value="${1#*=}"; shift ;;
    --*)
      _po_name="$1"
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      _po_value="$2"; shift 2 ;;
    *) break ;;
  esac
  _po_name="${_po_name#--}"
  _po_name="${_po_name//-/_}"
  if ! declare -p "$_po_name" >/dev/null 2>&1; then
    echo "$0: unknown option --${_po_name} (no variable '${_po_name}' in the script)" >&2
    exit 1
  fi
  printf -v "$_po_name" '%s' "$_po_value"
done
unset _po_name _po_value
true
