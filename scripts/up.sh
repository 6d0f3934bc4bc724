#!/usr/bin/env bash
# The README's first command on a fresh machine: installs what the build needs (cmake, libclang, a C++
# compiler, the pinned toolchain; idempotent, see scripts/setup.sh), then builds and runs `stacknet up`
# with the arguments given, e.g. `./scripts/up.sh --upstream http://127.0.0.1:11434/v1 --model llama3.2`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh build
# Where rustup puts cargo when setup.sh had to install it.
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo run --release --locked -p stacknet-cli -- up "$@"
