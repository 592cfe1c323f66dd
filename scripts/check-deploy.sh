#!/usr/bin/env bash
# Checks deploy/, docker-compose.yml and docs/alerts.md in a few seconds,
# without cargo: the same checks as tests/deploy_rules.rs (which CI runs),
# for the edit-check loop on rules, dashboards and manifests.
#
#   bash scripts/check-deploy.sh          # check
#   bash scripts/check-deploy.sh --write  # first regenerate deploy/kubernetes/prometheusrule.yaml
#
# The live test (Prometheus scraping cxpulse with the rules loaded) is
#   bash scripts/test.sh --test deploy_live
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-tools.sh >/dev/null
# shellcheck source=/dev/null
source .tools/env

check() { echo "check-deploy: $*"; }
dc() { "$CXPULSE_DEPLOY_PYTHON" deploy/tools/deploycheck.py "$@"; }

if [ "${1:-}" = "--write" ]; then
    dc prometheusrule --write
fi

check "promtool check config + rules"
"$CXPULSE_PROMTOOL" check config deploy/prometheus/prometheus.yml >/dev/null
"$CXPULSE_PROMTOOL" check rules deploy/prometheus/rules/*.yml >/dev/null
check "promtool test rules"
"$CXPULSE_PROMTOOL" test rules deploy/prometheus/tests/*.test.yml
for c in alerts-tested alerts-documented names grafana-sync kustomization prometheusrule; do
    dc "$c"
done
dc dashboard >/dev/null && echo "ok: dashboard"
check "yamllint"
"$CXPULSE_YAMLLINT" --strict -c deploy/yamllint.yml docker-compose.yml deploy/
check "compose specification"
"$CXPULSE_CHECK_JSONSCHEMA" --builtin-schema vendor.compose-spec docker-compose.yml
dc compose >/dev/null && echo "ok: compose images pinned, mounts exist"
check "kubernetes schemas"
core=(deploy/kubernetes/configmap.yaml deploy/kubernetes/service.yaml deploy/kubernetes/statefulset.yaml)
for v in 1.29.0 1.37.0; do
    out="$("$CXPULSE_KUBERNETES_VALIDATE" --strict -k "$v" "${core[@]}")"
    echo "$out"
    if grep -qE 'WARN|ERROR' <<<"$out"; then exit 1; fi
done
"$CXPULSE_CHECK_JSONSCHEMA" --schemafile deploy/kubernetes/schemas/servicemonitor-monitoring.coreos.com-v1.json \
    deploy/kubernetes/servicemonitor.yaml
"$CXPULSE_CHECK_JSONSCHEMA" --schemafile deploy/kubernetes/schemas/prometheusrule-monitoring.coreos.com-v1.json \
    deploy/kubernetes/prometheusrule.yaml
echo "check-deploy: all passed"
