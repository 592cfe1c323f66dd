#!/usr/bin/env bash
# The project's test command: installs the test tools (tansu broker, promtool)
# if needed, then runs every test target against them.
#   bash scripts/test.sh [extra cargo test args, e.g. --test harness_smoke]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-tools.sh
# shellcheck source=/dev/null
source .tools/env
# Tests that need the Kafka broker must fail, never skip, when it is missing.
export CXPULSE_REQUIRE_BROKER=1

echo "test: cargo test --all-targets $*"
cargo test --all-targets "$@"
