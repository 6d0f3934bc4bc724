#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine. Safe to run again: it only
# installs what is missing.
set -euo pipefail

need_apt=()
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# The toolchain pinned in rust-toolchain.toml, with rustfmt and clippy.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
