#!/usr/bin/env bash
# Installs the official `openai` Python package into a virtual environment in the test cache
# (outside the repository), for tests/serve_openai.rs: the real client library against
# `gemmactl serve`. Safe to run again: it only installs what is missing.
#
#   scripts/lib/openai-venv.sh        # prints the venv's python on stdout
set -euo pipefail

cache="${GEMMACTL_TEST_CACHE:-$HOME/.cache/gemmactl-test}"
venv="$cache/openai-venv"
python="$venv/bin/python"

if [ -x "$python" ] && "$python" -c 'import openai' >/dev/null 2>&1; then
  echo "$python"
  exit 0
fi
mkdir -p "$cache"
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  # Debian splits venv (and its pip bootstrap) out of python3.
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$python" -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<4' >&2
"$python" -c 'import openai; print("openai", openai.__version__)' >&2
echo "$python"
