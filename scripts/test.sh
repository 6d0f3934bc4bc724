#!/usr/bin/env bash
# The project's test command (README, .ci/run): format, lints, every test, the fuzz targets' build.
# Idempotent; installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory per machine, shared by every checkout and by CI, so a run does not rebuild the world.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stacknet/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Tests that need PostgreSQL read this; the machine's server answers here (trust auth, database `test`).
export STACKNET_TEST_DATABASE_URL="${STACKNET_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

scripts/setup.sh
export STACKNET_SDK_PYTHON="${STACKNET_SDK_PYTHON:-${STACKNET_VENV:-$HOME/.cache/stacknet/venv}/bin/python}"

# The real models the tests run, pulled once into a cache: `models pull` is a no-op once a model is
# present and verified against its pinned sha256, so later runs are offline and fast.
export STACKNET_MODELS_DIR="${STACKNET_MODELS_DIR:-$HOME/.cache/stacknet/models}"
echo "== models (cached in $STACKNET_MODELS_DIR)"
for model in smollm2-135m-instruct all-minilm-l6-v2; do
    cargo run --quiet --locked -p stacknet-cli -- models pull "$model" --models-dir "$STACKNET_MODELS_DIR"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)

echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== fuzz targets build"
cargo build --manifest-path fuzz/Cargo.toml --locked --bins

echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run: cargo's own last line is that of the (empty) doc-test binary.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
