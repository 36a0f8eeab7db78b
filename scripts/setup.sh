#!/usr/bin/env bash
# Installs what building and running gemmactl needs, when it is missing, then builds the workspace.
# Used by demo.sh, test.sh and bench.sh; safe to run again (it only installs what is absent).
#
# Needs: a Rust toolchain (rustup). Installs on Debian/Ubuntu: a C/C++ compiler, CMake and
# libclang (llama.cpp and its Rust bindings), Python's pip (model downloads come as Python
# wheels), the Vulkan loader and Mesa's software device (the doctor tests) and venv (the tests' Python packages). Uses sudo when not
# run as root. Each need is checked for what the build uses (scripts/lib/prereqs.sh); one that
# cannot be met is one sentence naming the package and the command.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi

# What the build and the tests need, checked for what it is (scripts/lib/prereqs.sh): one line
# per unmet need, "PACKAGE<TAB>sentence".
. scripts/lib/prereqs.sh
report=$(prereq_report / Cargo.toml)
missing=$(printf '%s\n' "$report" | cut -f1 | tr ' ' '\n' | grep -v -e '^-$' -e '^$' | sort -u | tr '\n' ' ' || true)

if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "error: installing ${missing% } needs root: run \`apt-get install ${missing% }\` as root, then run this again" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  say "installing ${missing% }"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
  report=$(prereq_report / Cargo.toml)
fi
# Whatever is still unmet (no apt, or a package that was not enough): each need's own sentence.
if [ -n "$report" ]; then
  printf '%s\n' "$report" | cut -f2- >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "(this is not a Debian/Ubuntu system: install your distribution's packages for the above, then run this again)" >&2
  fi
  exit 1
fi

# --tests (scripts/test.sh, .ci/run): build the test targets too, with the hooks only tests use,
# so `cargo test` afterwards compiles nothing again (llama.cpp alone takes minutes).
build=(--workspace --locked)
if [ "${1:-}" = --tests ]; then
  build+=(--all-targets --features gemmactl/test-support)
fi
# llama.cpp is compiled for the CPU extensions this machine can run, checked by running them
# (GEMMACTL_PORTABLE=1: ggml's x86-64 default, for binaries meant for other machines). Decided
# before the first build, so llama.cpp is compiled once.
. scripts/lib/cpu-features.sh
write_cpu_features

say "building gemmactl and gemma-engine (the first build compiles llama.cpp: several minutes)"
cargo build "${build[@]}"
