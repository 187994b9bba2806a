//! The alert rules weir ships (`config/monitoring/prometheus-rule.yaml`): the
//! PrometheusRule's `spec` written out as a plain rule file, checked by `promtool check
//! rules` and tested by `promtool test rules` against `tests/alerts/weir-rules.test.yaml`
//! (Debian's prometheus package ships promtool; `testcluster/prepare.sh` installs it).
//! Every alert is named in a test, firing and quiet, and every series it reads is one
//! weir exports.

use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The rule file a plain Prometheus loads: the PrometheusRule's spec.
fn rule_file() -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo("config/monitoring/prometheus-rule.yaml")).unwrap();
    let rule: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    rule["spec"].clone()
}

fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus package; testcluster/prepare.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn every_alert_rule_is_valid_and_fires_on_what_it_is_for() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("weir-rules.yaml"),
        serde_yaml::to_string(&rule_file()).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        repo("tests/alerts/weir-rules.test.yaml"),
        dir.path().join("weir-rules.test.yaml"),
    )
    .unwrap();
    let checked = promtool(dir.path(), &["check", "rules", "weir-rules.yaml"]);
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    let tested = promtool(dir.path(), &["test", "rules", "weir-rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_and_reads_only_what_weir_exports() {
    let tests = std::fs::read_to_string(repo("tests/alerts/weir-rules.test.yaml")).unwrap();
    use weir::telemetry::{CallLabels, PhaseLabels, ResultLabels, Telemetry};
    // A family prints once it holds a series: one of each.
    let exported = Telemetry::default();
    let result = ResultLabels { result: "ok".into() };
    for family in [&exported.decisions, &exported.prometheus_queries, &exported.reconciles] {
        family.get_or_create(&result).inc();
    }
    let call = CallLabels {
        kind: "Promoted".into(),
        result: "failed".into(),
    };
    exported.notifications.get_or_create(&call).inc();
    exported.webhook_calls.get_or_create(&call).inc();
    let phase = PhaseLabels {
        namespace: "shop".into(),
        name: "cart".into(),
        phase: "Progressing".into(),
    };
    exported.phase.get_or_create(&phase).set(1);
    let mut names = String::new();
    prometheus_client::encoding::text::encode(&mut names, &exported.registry).unwrap();
    for group in rule_file()["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!("alertname: {alert}")),
                "{alert} has no promtool test"
            );
            let expr = rule["expr"].as_str().unwrap();
            for series in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("weir_"))
            {
                let family = series.trim_end_matches("_total");
                assert!(
                    names.contains(&format!("# TYPE {family} ")),
                    "{alert} reads {series}, which weir does not export:\n{names}"
                );
            }
        }
    }
}
