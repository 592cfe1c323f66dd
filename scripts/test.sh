#!/usr/bin/env bash
# The project's test command: installs the test tools (tansu broker, promtool)
# if needed, then runs the tests against them.
#   bash scripts/test.sh                       # cargo test --all-targets
#   bash scripts/test.sh --test harness_smoke  # any args replace --all-targets
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-tools.sh
# shellcheck source=/dev/null
source .tools/env
# Tests that need the Kafka broker must fail, never skip, when it is missing.
export CXPULSE_REQUIRE_BROKER=1

if [ "$#" -eq 0 ]; then set -- --all-targets; fi
echo "test: cargo test --no-fail-fast $*"
cargo test --no-fail-fast "$@"
