//! Static checks of the deployment files (deploy/, docker-compose.yml,
//! docs/alerts.md): promtool on the Prometheus config and rules and their
//! unit tests, the Grafana-managed rules against the Prometheus alerts, the
//! Compose file against the Compose specification's JSON schema, the
//! Kubernetes manifests against the Kubernetes schemas (and the Prometheus
//! Operator resources against deploy/kubernetes/schemas), yamllint, and the
//! shipped configs against cxpulse's own config loader.
//!
//! Tools come from `scripts/setup-tools.sh` through `.tools/env`
//! (`CXPULSE_PROMTOOL`, `CXPULSE_DEPLOY_PYTHON`, `CXPULSE_CHECK_JSONSCHEMA`,
//! `CXPULSE_KUBERNETES_VALIDATE`, `CXPULSE_YAMLLINT`), else from
//! `.tools/venv/bin`. A missing tool fails the test, never skips it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{cxpulse_command, deploycheck, output, root, run_ok, venv_tool};

fn files_in(dir: &str, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *{suffix} in {dir}");
    v
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

// ---------------------------------------------------------------------------
// Prometheus rules
// ---------------------------------------------------------------------------

/// `promtool ARGS FILES`: it must succeed and say SUCCESS once per file.
fn promtool_each(args: &[&str], files: &[String]) {
    let out = run_ok(Command::new(common::promtool()).args(args).args(files));
    assert_eq!(out.matches("SUCCESS").count(), files.len(), "{out}");
}

/// The scrape config parses and loads both rule files; every rule is valid
/// PromQL with valid templates.
#[test]
fn promtool_checks_the_prometheus_config_and_rule_files() {
    let out = run_ok(
        Command::new(common::promtool())
            .args(["check", "config"])
            .arg("deploy/prometheus/prometheus.yml"),
    );
    assert!(out.contains("2 rule files found"), "{out}");
    promtool_each(
        &["check", "rules"],
        &files_in("deploy/prometheus/rules", ".yml"),
    );
}

/// `promtool test rules`: each alert fires on simulated series (with the
/// labels and annotations expected) and stays quiet on look-alikes; the
/// fleet recording rules give the hand-computed values (Wilson and adjusted
/// Wald bounds from summed counts, ratios from summed numerators and
/// denominators).
#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    promtool_each(
        &["test", "rules"],
        &files_in("deploy/prometheus/tests", ".test.yml"),
    );
}

/// Every alert has at least one promtool case where it fires and one where
/// it must not.
#[test]
fn every_alert_has_a_firing_and_a_quiet_promtool_case() {
    deploycheck(&["alerts-tested"]);
}

/// Every alert has summary, description and a runbook_url pointing at its
/// section of docs/alerts.md, which exists (with Meaning and Act) and has a
/// row in the catalog.
#[test]
fn every_alert_is_documented_with_a_runbook() {
    deploycheck(&["alerts-documented"]);
}

/// Every series a recording rule, an alert, a dashboard query or a Grafana
/// rule names is defined: in docs/METRICS.md, in cxpulse's source, or by a
/// recording rule.
#[test]
fn rules_and_dashboard_name_only_existing_series() {
    deploycheck(&["names"]);
}

// ---------------------------------------------------------------------------
// Grafana
// ---------------------------------------------------------------------------

/// The Grafana-managed rules mirror the churn-spike and SLA alerts: same
/// query (the Prometheus expr is `(<query>) <op> <threshold>`), threshold,
/// `for`, labels and runbook, on the provisioned Prometheus datasource.
#[test]
fn grafana_alert_rules_stay_in_step_with_prometheus_alerts() {
    deploycheck(&["grafana-sync"]);
    let rules = json(&deploycheck(&["grafana-queries"]));
    let titles: Vec<&str> = rules
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["title"].as_str().expect("title"))
        .collect();
    for want in [
        "CxpulseChurnSpike",
        "CxpulseSlaBreachRatioHigh",
        "CxpulseUrgentTicketBreaching",
    ] {
        assert!(titles.contains(&want), "{want} not in {titles:?}");
    }
}

/// The dashboard is valid JSON with the five sections, unique panel ids, the
/// $datasource variable on every panel and only defined variables in its
/// queries.
#[test]
fn dashboard_is_well_formed() {
    let queries = json(&deploycheck(&["dashboard"]));
    let n = queries.as_array().expect("array").len();
    assert!(n >= 40, "only {n} queries in the dashboard");
}

// ---------------------------------------------------------------------------
// YAML, Compose, Kubernetes
// ---------------------------------------------------------------------------

#[test]
fn yaml_files_pass_yamllint() {
    run_ok(
        Command::new(venv_tool("CXPULSE_YAMLLINT", "yamllint"))
            .args(["--strict", "-c", "deploy/yamllint.yml"])
            .args(["docker-compose.yml", "deploy/"]),
    );
}

/// docker-compose.yml validates against the Compose specification's JSON
/// schema (vendored in check-jsonschema, whose version setup-tools pins);
/// every image has a fixed tag (pulled ones a full version), the Dockerfile's
/// base images too, and every mounted path exists.
#[test]
fn compose_file_matches_the_compose_specification_and_pins_images() {
    run_ok(
        Command::new(venv_tool("CXPULSE_CHECK_JSONSCHEMA", "check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg("docker-compose.yml"),
    );
    deploycheck(&["compose"]);
}

/// Each cxpulse service of docker-compose.yml (three replicas) starts with
/// config/cxpulse.toml plus its CXPULSE__* environment: cxpulse's own loader
/// accepts them.
#[test]
fn compose_cxpulse_environment_is_a_valid_config() {
    let services = json(&deploycheck(&["compose"]));
    let services = services.as_object().expect("object");
    let names: Vec<&String> = services.keys().collect();
    assert_eq!(
        names,
        ["cxpulse-0", "cxpulse-1", "cxpulse-2"],
        "{services:?}"
    );
    for (name, env) in services {
        let env = env.as_object().expect("object");
        assert!(
            env.contains_key("CXPULSE__KAFKA__BROKERS"),
            "{name}: {env:?}"
        );
        config_loads(&root().join("config/cxpulse.toml"), env);
    }
}

/// core objects (ConfigMap, Service, StatefulSet) against the Kubernetes
/// schemas bundled in kubernetes-validate, strictly (no unknown fields), for
/// the oldest and newest Kubernetes versions it carries; the Prometheus
/// Operator resources against deploy/kubernetes/schemas; the PrometheusRule
/// holds exactly the rule files; kustomization.yaml lists every manifest.
#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let manifests = files_in("deploy/kubernetes", ".yaml");
    let (custom, core): (Vec<String>, Vec<String>) = manifests
        .into_iter()
        .filter(|m| !m.ends_with("kustomization.yaml"))
        .partition(|m| {
            std::fs::read_to_string(root().join(m))
                .expect("read manifest")
                .contains("apiVersion: monitoring.coreos.com/")
        });
    assert_eq!(core.len(), 3, "core manifests: {core:?}");
    for version in ["1.29.0", "1.37.0"] {
        let out = run_ok(
            Command::new(venv_tool(
                "CXPULSE_KUBERNETES_VALIDATE",
                "kubernetes-validate",
            ))
            .args(["--strict", "-k", version])
            .args(&core),
        );
        // An unknown kind or apiVersion is only a warning there: fail on it.
        assert!(!out.contains("WARN") && !out.contains("ERROR"), "{out}");
        assert_eq!(out.matches(" passed ").count(), core.len(), "{out}");
    }
    let schemas = [
        (
            "ServiceMonitor",
            "deploy/kubernetes/schemas/servicemonitor-monitoring.coreos.com-v1.json",
        ),
        (
            "PrometheusRule",
            "deploy/kubernetes/schemas/prometheusrule-monitoring.coreos.com-v1.json",
        ),
    ];
    assert_eq!(custom.len(), schemas.len(), "custom resources: {custom:?}");
    for (kind, schema) in schemas {
        let file = custom
            .iter()
            .find(|m| {
                std::fs::read_to_string(root().join(m))
                    .expect("read")
                    .contains(&format!("kind: {kind}"))
            })
            .unwrap_or_else(|| panic!("no {kind} manifest in {custom:?}"));
        run_ok(
            Command::new(venv_tool("CXPULSE_CHECK_JSONSCHEMA", "check-jsonschema"))
                .args(["--schemafile", schema])
                .arg(file),
        );
    }
    deploycheck(&["prometheusrule"]);
    deploycheck(&["kustomization"]);
}

/// The ConfigMap's cxpulse.toml plus the StatefulSet's CXPULSE__* environment
/// load in cxpulse (unknown keys and bad values are errors there).
#[test]
fn kubernetes_configmap_is_a_valid_cxpulse_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("cxpulse.toml");
    let env = json(&deploycheck(&[
        "k8s-config",
        cfg.to_str().expect("utf-8 path"),
    ]));
    config_loads(&cfg, env.as_object().expect("object"));
}

/// The validators are not vacuous: each rejects a broken file.
#[test]
fn the_validators_reject_broken_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compose = dir.path().join("compose.yml");
    std::fs::write(
        &compose,
        "services:\n  x:\n    image: a:1\n    restart: sometimes\n    portz: []\n",
    )
    .unwrap();
    let k8s = dir.path().join("sts.yaml");
    std::fs::write(
        &k8s,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  replicas: one\n",
    )
    .unwrap();
    let sm = dir.path().join("sm.yaml");
    std::fs::write(
        &sm,
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: x\n\
         spec:\n  selector: {}\n  endpoints:\n    - port: http\n      intervall: 30s\n",
    )
    .unwrap();
    let rules = dir.path().join("bad.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n",
    )
    .unwrap();
    let cases: Vec<(&str, Command)> = vec![
        ("compose schema", {
            let mut c = Command::new(venv_tool("CXPULSE_CHECK_JSONSCHEMA", "check-jsonschema"));
            c.args(["--builtin-schema", "vendor.compose-spec"])
                .arg(&compose);
            c
        }),
        ("kubernetes schema", {
            let mut c = Command::new(venv_tool(
                "CXPULSE_KUBERNETES_VALIDATE",
                "kubernetes-validate",
            ));
            c.arg("--strict").arg(&k8s);
            c
        }),
        ("ServiceMonitor schema", {
            let mut c = Command::new(venv_tool("CXPULSE_CHECK_JSONSCHEMA", "check-jsonschema"));
            c.args([
                "--schemafile",
                "deploy/kubernetes/schemas/servicemonitor-monitoring.coreos.com-v1.json",
            ])
            .arg(&sm);
            c
        }),
        ("promtool check rules", {
            let mut c = Command::new(common::promtool());
            c.args(["check", "rules"]).arg(&rules);
            c
        }),
        ("yamllint", {
            let mut c = Command::new(venv_tool("CXPULSE_YAMLLINT", "yamllint"));
            c.args(["--strict", "-c", "deploy/yamllint.yml"])
                .arg(&compose);
            std::fs::write(dir.path().join("lint.yml"), "a: 1\na: 2\n").unwrap();
            c.arg(dir.path().join("lint.yml"));
            c
        }),
    ];
    for (what, mut cmd) in cases {
        let out = output(&mut cmd);
        assert!(
            !out.status.success(),
            "{what} accepted a broken file:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Compose and Kubernetes run three replicas with durable state in Kafka
/// (the default store), each with its name as group instance id (compose:
/// the service name; the StatefulSet: the pod name), and no state volume.
/// The check refuses copies of the shipped files with state in checkpoint
/// files off a volume or on several replicas, without an instance id, or
/// without durable state; it still accepts one instance with its checkpoint
/// dir on a volume.
#[test]
fn deploys_keep_durable_state_in_kafka() {
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).expect("read");
    for i in 0..3 {
        assert!(compose.contains(&format!(
            "  cxpulse-{i}:\n    <<: *cxpulse-run\n    environment:\n      <<: *cxpulse-env\n      \
             CXPULSE__KAFKA__GROUP_INSTANCE_ID: cxpulse-{i}\n"
        )));
    }
    assert!(
        !compose.contains("CXPULSE__CHECKPOINT__"),
        "compose sets a checkpoint key"
    );
    deploycheck(&["compose"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cxpulse.toml");
    let env = json(&deploycheck(&["k8s-config", out.to_str().expect("utf-8")]));
    assert_eq!(
        env["CXPULSE__KAFKA__GROUP_INSTANCE_ID"], "cxpulse-0",
        "{env}"
    );
    let toml = std::fs::read_to_string(&out).expect("read");
    assert!(toml.contains("store = \"kafka\""), "{toml}");
    let sts =
        std::fs::read_to_string(root().join("deploy/kubernetes/statefulset.yaml")).expect("read");
    assert!(sts.contains("  replicas: 3\n") && !sts.contains("volumeClaimTemplates"));

    let run = |args: &[&str]| {
        let o = output(
            Command::new(common::python())
                .arg("deploy/tools/deploycheck.py")
                .args(args),
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let refused = |args: &[&str], want: &str| {
        let (ok, text) = run(args);
        assert!(
            !ok && text.contains(want),
            "{args:?}, want {want:?}: {text}"
        );
    };
    let compose_copy = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("utf-8").to_string()
    };
    let anchor_env = "  RUST_LOG: info\n\nx-cxpulse-run";
    assert!(compose.contains(anchor_env));
    // State in checkpoint files, three replicas, no volume.
    let files = compose_copy(
        "dir.yml",
        compose.replace(
            anchor_env,
            "  RUST_LOG: info\n  CXPULSE__CHECKPOINT__DIR: /var/lib/cxpulse/checkpoints\n\n\
             x-cxpulse-run",
        ),
    );
    refused(
        &["compose", &files],
        "service cxpulse-1: checkpoint dir /var/lib/cxpulse/checkpoints is not on a named volume",
    );
    refused(
        &["compose", &files],
        "3 replicas with state in checkpoint files",
    );
    // No durable state at all.
    let off = compose_copy(
        "off.yml",
        compose.replace(
            anchor_env,
            "  RUST_LOG: info\n  CXPULSE__CHECKPOINT__STORE: \"off\"\n\nx-cxpulse-run",
        ),
    );
    refused(&["compose", &off], "cxpulse runs without durable state");
    // One replica without its instance id, another with a copied one.
    let ids = compose_copy(
        "ids.yml",
        compose
            .replace("      CXPULSE__KAFKA__GROUP_INSTANCE_ID: cxpulse-1\n", "")
            .replace(
                "GROUP_INSTANCE_ID: cxpulse-2\n",
                "GROUP_INSTANCE_ID: cxpulse-0\n",
            ),
    );
    refused(
        &["compose", &ids],
        "service cxpulse-1: CXPULSE__KAFKA__GROUP_INSTANCE_ID is ''",
    );
    refused(
        &["compose", &ids],
        "service cxpulse-2: CXPULSE__KAFKA__GROUP_INSTANCE_ID is 'cxpulse-0'",
    );
    // One instance with its checkpoint dir on a named volume: still fine.
    let single = "name: one\nservices:\n  cxpulse:\n    image: cxpulse:local\n    \
                  build: {context: ., dockerfile: deploy/Dockerfile}\n    \
                  command: [\"run\"]\n    environment:\n      \
                  CXPULSE__CHECKPOINT__DIR: /var/lib/cxpulse/checkpoints\n    \
                  volumes: [\"state:/var/lib/cxpulse\"]\nvolumes:\n  state: {}\n";
    let single = compose_copy("single.yml", single.to_string());
    let (ok, text) = run(&["compose", &single]);
    assert!(ok, "{text}");

    // The StatefulSet with state in checkpoint files (no claim: there is
    // none any more), and without the pod name as instance id.
    let k8s = dir.path().join("k8s");
    std::fs::create_dir(&k8s).expect("mkdir");
    let cm = std::fs::read_to_string(root().join("deploy/kubernetes/configmap.yaml"))
        .expect("read")
        .replace(
            "    store = \"kafka\"\n",
            "    store = \"dir\"\n    dir = \"/var/lib/cxpulse/checkpoints\"\n",
        );
    std::fs::write(k8s.join("configmap.yaml"), cm).expect("write");
    let gid = "            - name: CXPULSE__KAFKA__GROUP_INSTANCE_ID\n              \
               valueFrom:\n                fieldRef:\n                  \
               fieldPath: metadata.name\n";
    assert!(sts.contains(gid));
    std::fs::write(k8s.join("statefulset.yaml"), &sts).expect("write");
    let args = [
        "k8s-config",
        out.to_str().expect("utf-8"),
        k8s.to_str().expect("utf-8"),
    ];
    refused(&args, "is not on a persistent volume");
    refused(&args, "3 replicas with state in checkpoint files");
    refused(&args, "needs an fsGroup");
    std::fs::copy(
        root().join("deploy/kubernetes/configmap.yaml"),
        k8s.join("configmap.yaml"),
    )
    .expect("copy");
    std::fs::write(k8s.join("statefulset.yaml"), sts.replace(gid, "")).expect("write");
    refused(
        &args,
        "CXPULSE__KAFKA__GROUP_INSTANCE_ID must come from the pod name",
    );
}

/// Loads `cfg` with `env` the way `cxpulse run` does, through `cxpulse
/// replay` over an empty input: exit 0, or the loader's error.
fn config_loads(cfg: &Path, env: &serde_json::Map<String, serde_json::Value>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").expect("write");
    let mut cmd = cxpulse_command();
    cmd.arg("replay").arg(&empty).arg("--config").arg(cfg);
    for (k, v) in env {
        cmd.env(k, v.as_str().expect("string value"));
    }
    let out = run_ok(&mut cmd);
    assert!(out.contains("cxpulse_events_total"), "{out}");
}
