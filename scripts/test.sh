#!/usr/bin/env bash
# Run all of Cairn's checks and tests on a fresh Debian machine (as root):
# installs the system packages the tests need, then formatting, lints and every test,
# including the ones against a real Debian root made with mmdebstrap (built once, cached
# under ${CAIRN_TEST_CACHE:-/var/tmp/cairn-test-cache}).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
cargo test --workspace
