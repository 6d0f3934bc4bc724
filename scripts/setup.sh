#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine. Safe to run again: it only
# installs what is missing. `scripts/setup.sh build` installs only what building needs (scripts/up.sh).
set -euo pipefail
what="${1:-all}"

apt_install() {
    local SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "== installing $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

command -v g++ >/dev/null 2>&1 || apt_install g++
# llama.cpp (built by llama-cpp-sys-2) needs cmake, and its bindings need libclang.
command -v cmake >/dev/null 2>&1 || apt_install cmake
# (libclang-cpp alone, which other packages pull in, is not enough: bindgen loads libclang.so.)
dpkg -s libclang-dev >/dev/null 2>&1 || apt_install libclang-dev
# Code execution runs strangers' programs in bubblewrap (`stacknet up` serves it where it can).
command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap
# The fallback voice (text to speech) and its encoders: programs the node runs, never links.
for program in espeak-ng:espeak-ng lame:lame flac:flac opusenc:opus-tools; do
    command -v "${program%%:*}" >/dev/null 2>&1 || apt_install "${program#*:}"
done

# The toolchain pinned in rust-toolchain.toml, with rustfmt and clippy, through rustup: Debian's own
# package where the release has one (trixie and later), otherwise the official installer.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v rustup >/dev/null 2>&1; then
    if apt-cache policy rustup 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt_install rustup
    else
        command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
        echo "== installing rustup from https://sh.rustup.rs"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none
    fi
fi
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install

[ "$what" = build ] && exit 0

# The dashboard's test drives a real headless browser over WebDriver.
command -v chromium >/dev/null 2>&1 || apt_install chromium
command -v chromedriver >/dev/null 2>&1 || apt_install chromium-driver

python3 -c "import venv, ensurepip" >/dev/null 2>&1 || apt_install python3-venv

# The official OpenAI and MCP Python SDKs, which tests drive against `stacknet up` to prove
# compatibility, Pillow, with which the OCR test renders the text it has read back, and PyAV
# (FFmpeg's decoders), with which the videos test decodes the MP4 files it downloads, and
# Prometheus' official client, whose strict OpenMetrics parser reads the hub's and node's `/metrics`.
# Pinned, so a new major version (mcp 2 renamed FastMCP) cannot change what the tests run.
venv="${STACKNET_VENV:-$HOME/.cache/stacknet/venv}"
sdks="openai==3.57.0 mcp==2.3.0 pillow==12.0.0 av==18.1.0 prometheus-client==0.23.1"
if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('openai') == '3.57.0' and m.version('mcp') == '2.3.0' and m.version('pillow') == '12.0.0' and m.version('av') == '18.1.0' and m.version('prometheus-client') == '0.23.1'" >/dev/null 2>&1; then
    echo "== installing the OpenAI and MCP Python SDKs, Pillow, PyAV and prometheus-client into $venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check $sdks
fi
