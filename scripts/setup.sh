#!/usr/bin/env bash
# Installs what building and running gemmactl needs, when it is missing, then builds the workspace.
# Used by demo.sh, test.sh and bench.sh; safe to run again (it only installs what is absent).
#
# Needs: a Rust toolchain (rustup). Installs on Debian/Ubuntu: a C/C++ compiler, CMake and
# libclang (llama.cpp and its Rust bindings), Python's pip (model downloads come as Python
# wheels) and venv (the tests' gemma.cpp converter). Uses sudo when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed: install Rust from rustup (the only thing gemmactl does not install itself)" >&2
  exit 1
fi

missing=()
command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || missing+=(build-essential)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# bindgen needs libclang; any version Debian ships will do.
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* /usr/lib/aarch64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# The Vulkan loader and Mesa's software device (llvmpipe): tests/doctor.rs checks it is never taken for a GPU.
if ! ls /usr/lib/*/libvulkan.so.1 >/dev/null 2>&1 || ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  missing+=(libvulkan1 mesa-vulkan-drivers)
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  missing+=(python3-pip)
fi
# Virtual environments (the tests keep the gemma.cpp converter's packages in one).
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${missing[*]} and this is not a Debian/Ubuntu system: install them with your package manager, then run this again" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "building gemmactl and gemma-engine (the first build compiles llama.cpp: several minutes)"
cargo build --workspace --locked
