//! The Helm chart (`charts/weir`) and `config/` are one installation: with default
//! values the chart renders exactly what `kubectl kustomize config/` does (and with
//! `watchNamespace`, what `config/namespaced` does), its CRD and alert rules are the
//! repository's, `helm lint --strict` passes, and values reach the objects. Helm is
//! built from the pinned module `helm.sh/helm/v4` (tests/gitops/build.sh); kubectl from
//! the local control plane's build. The chart installed on a cluster, completing a
//! release: `tests/e2e/` `installed_with_helm`.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use weir_testkit::devcluster::{self, repo_dir};

fn helm(args: &[&str]) -> String {
    let helm = weir_testkit::gitops::tools()
        .expect("tests/gitops/build.sh")
        .join("helm");
    let out = Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("weir-helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("weir-helm-config"))
        .output()
        .expect("helm");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "helm {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn chart() -> String {
    repo_dir().join("charts/weir").display().to_string()
}

/// `helm template` of the chart, installed in weir-system with these `--set`s.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "weir",
        &chart,
        "--namespace",
        "weir-system",
        "--include-crds",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    weir::yaml::documents(&helm(&args)).expect("the chart renders YAML")
}

fn kustomize(dir: &str) -> Vec<Value> {
    let bin = devcluster::binaries().expect("control-plane binaries (kubectl)");
    let out = Command::new(bin.join("kubectl"))
        .args(["kustomize", &repo_dir().join(dir).display().to_string()])
        .output()
        .expect("kubectl kustomize");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    weir::yaml::documents(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// Objects by kind/namespace/name, compared as values: a ConfigMap's files as the YAML
/// they hold (comments aside), and without what only Helm adds (the config checksum
/// that restarts weir when its files change) or only kustomize has (the Namespace,
/// which `helm install --create-namespace` makes).
fn by_name(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for mut doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if kind == "Namespace" {
            continue;
        }
        if let Some(a) = doc
            .pointer_mut("/spec/template/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove("checksum/config");
        }
        if kind == "ConfigMap" {
            for (_, file) in doc["data"].as_object_mut().into_iter().flatten() {
                let parsed: Value = serde_saphyr::from_str(file.as_str().unwrap()).expect("a file of YAML");
                *file = parsed;
            }
        }
        let meta = &doc["metadata"];
        let key = format!(
            "{kind} {}/{}",
            meta["namespace"].as_str().unwrap_or("-"),
            meta["name"].as_str().unwrap()
        );
        out.insert(key, doc);
    }
    out
}

fn assert_same(chart: Vec<Value>, config: Vec<Value>, what: &str) {
    let (chart, config) = (by_name(chart), by_name(config));
    let names = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&chart),
        names(&config),
        "{what}: the chart and config/ make different objects"
    );
    for (key, object) in &chart {
        let mut differences = vec![];
        differ(object, &config[key], String::new(), &mut differences);
        assert!(differences.is_empty(), "{what}: {key} differs at {differences:#?}");
    }
}

/// The paths where two values differ (numbers by value: YAML writers differ on 100 vs
/// 100.0), with both sides.
fn differ(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (a, b) = (x.get(key).unwrap_or(&Value::Null), y.get(key).unwrap_or(&Value::Null));
                differ(a, b, format!("{path}/{key}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (a, b)) in x.iter().zip(y).enumerate() {
                differ(a, b, format!("{path}/{i}"), out);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(format!("{path}: chart {a}, config {b}")),
    }
}

#[test]
fn the_chart_lints() {
    let text = helm(&["lint", &chart(), "--strict"]);
    assert!(text.contains("0 chart(s) failed"), "{text}");
}

#[test]
fn with_default_values_the_chart_is_config() {
    assert_same(render(&[]), kustomize("config"), "cluster-wide");
}

#[test]
fn for_one_namespace_the_chart_is_config_namespaced() {
    assert_same(
        render(&["watchNamespace=apps"]),
        kustomize("config/namespaced"),
        "namespaced",
    );
}

/// The chart's copies of the CRD and the alert rules are the repository's
/// (`WEIR_BLESS=1` copies them), and its version is weir's.
#[test]
fn the_crd_the_rules_and_the_version_are_the_repositorys() {
    let root = repo_dir();
    for (copy, source) in [
        ("charts/weir/crds/rollout.yaml", "crds/rollout.yaml"),
        (
            "charts/weir/files/prometheus-rule.yaml",
            "config/monitoring/prometheus-rule.yaml",
        ),
    ] {
        let source = std::fs::read_to_string(root.join(source)).unwrap();
        if std::env::var_os("WEIR_BLESS").is_some() {
            std::fs::write(root.join(copy), &source).unwrap();
        }
        let kept = std::fs::read_to_string(root.join(copy)).unwrap_or_default();
        assert!(
            kept == source,
            "{copy} is stale: run WEIR_BLESS=1 cargo test --test helm"
        );
    }
    let chart = std::fs::read_to_string(root.join("charts/weir/Chart.yaml")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        chart.contains(&format!("\nversion: {version}\n")),
        "Chart.yaml version is not {version}"
    );
    assert!(
        chart.contains(&format!("\nappVersion: \"{version}\"\n")),
        "Chart.yaml appVersion is not {version}"
    );
}

/// For the Prometheus Operator: a ServiceMonitor on weir's metrics port, and the alert
/// rules of config/monitoring in the release's namespace, Prometheus's own `{{ }}`
/// templates untouched by Helm's.
#[test]
fn monitoring_renders_config_monitorings_rules_and_a_service_monitor() {
    let docs = render(&[
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=kps",
    ]);
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let config = kustomize("config/monitoring");
    assert_eq!(rule["spec"], config[0]["spec"]);
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    assert!(rule.to_string().contains("{{ $labels."), "Prometheus templates kept");
    let monitor = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = docs.iter().find(|d| d["kind"] == "Service").expect("a metrics Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 9090);
}

/// Values reach the objects: the image, one replica without election, Secrets granted
/// by name, the admin's providers, extra arguments; a changed file changes the checksum
/// that restarts weir.
#[test]
fn values_reach_the_objects() {
    let base = render(&[]);
    let docs = render(&[
        "image.repository=registry.example/weir",
        "image.tag=9.9.9",
        "replicas=1",
        "leaderElection.enabled=false",
        "podDisruptionBudget.enabled=false",
        "networkPolicy.enabled=false",
        "secretNames={team-b-prometheus,team-slack-hook}",
        "config.providers.providers[0].name=main",
        "config.providers.providers[0].address=http://prom.monitoring:9090",
        "extraArgs={--cluster-domain=corp.local}",
    ]);
    let find = |docs: &[Value], kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
    };
    let deployment = find(&docs, "Deployment", "weir").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/weir:9.9.9");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !args.contains(&"--leader-elect") && args.contains(&"--cluster-domain=corp.local"),
        "{args:?}"
    );
    for gone in [
        ("Role", "weir-leader-election"),
        ("PodDisruptionBudget", "weir"),
        ("NetworkPolicy", "weir"),
    ] {
        assert!(find(&docs, gone.0, gone.1).is_none(), "{gone:?} still rendered");
    }
    let secrets = find(&docs, "Role", "weir-provider-secrets").unwrap();
    assert_eq!(
        secrets["rules"][0]["resourceNames"],
        serde_json::json!(["team-b-prometheus", "team-slack-hook"])
    );
    let providers = &find(&docs, "ConfigMap", "weir-providers").unwrap()["data"]["providers.yaml"];
    let providers: Value = serde_saphyr::from_str(providers.as_str().unwrap()).unwrap();
    assert_eq!(providers["providers"][0]["address"], "http://prom.monitoring:9090");
    let checksum = |docs: &[Value]| {
        find(docs, "Deployment", "weir").unwrap()["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .clone()
    };
    assert_ne!(checksum(&docs), checksum(&base), "a changed file restarts weir");
}

/// The chart's CRD is what `helm install` applies: the repository's, whole.
#[test]
fn the_chart_installs_the_crd() {
    let docs = render(&[]);
    let crd = docs
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .expect("the CRD");
    let path = repo_dir().join("crds/rollout.yaml");
    let ours = weir::yaml::documents(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut differences = vec![];
    differ(crd, &ours[0], String::new(), &mut differences);
    assert!(differences.is_empty(), "{differences:#?}");
}
