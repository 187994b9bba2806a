//! The committed YAML: the CRD is exactly what the Rust types generate, and every file
//! under crds/, config/ and examples/ parses as Kubernetes objects.

use std::path::{Path, PathBuf};

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                // kustomize's own file, and Argo CD's test files of config/argocd (checked
                // by tests/gitops.rs), are not Kubernetes objects
                && p.file_name().is_some_and(|n| n != "kustomization.yaml" && !n.to_string_lossy().ends_with("_test.yaml"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let committed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/rollout.yaml")).unwrap();
    let generated = weir::cli::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/rollout.yaml is stale: run `cargo run -- crd > crds/rollout.yaml`"
    );
}

#[test]
fn every_manifest_parses_as_kubernetes_objects() {
    let mut kinds = vec![];
    for dir in ["crds", "config", "examples"] {
        let files = yaml_files(dir);
        assert!(!files.is_empty(), "{dir}/ has no YAML");
        for f in files {
            for doc in documents(&f) {
                let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_string);
                let kind = field("kind").unwrap_or_else(|| panic!("{}: a document without kind", f.display()));
                assert!(
                    field("apiVersion").is_some(),
                    "{}: {kind} without apiVersion",
                    f.display()
                );
                assert!(
                    doc.get("metadata").and_then(|m| m.get("name")).is_some(),
                    "{}: {kind} without metadata.name",
                    f.display()
                );
                kinds.push(kind);
            }
        }
    }
    for expected in [
        "CustomResourceDefinition",
        "ClusterRole",
        "Deployment",
        "VirtualService",
        "DestinationRule",
        "Rollout",
    ] {
        assert!(kinds.iter().any(|k| k == expected), "no {expected} among the manifests");
    }
}

#[test]
fn typed_manifests_deserialize_into_their_types() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    for dir in ["config", "examples"] {
        for f in yaml_files(dir) {
            for doc in documents(&f) {
                let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
                let err = match kind.as_str() {
                    "Deployment" => serde_yaml::from_value::<Deployment>(doc).err().map(|e| e.to_string()),
                    "ClusterRole" => serde_yaml::from_value::<ClusterRole>(doc).err().map(|e| e.to_string()),
                    "Rollout" => serde_yaml::from_value::<weir::api::Rollout>(doc)
                        .err()
                        .map(|e| e.to_string()),
                    _ => None,
                };
                assert!(err.is_none(), "{}: {kind}: {err:?}", f.display());
            }
        }
    }
}

#[test]
fn the_example_rollout_passes_the_controllers_validation() {
    for f in yaml_files("examples") {
        let text = std::fs::read_to_string(&f).unwrap();
        for problems in weir::cli::validate_documents(&text) {
            assert!(problems.is_empty(), "{}: {problems:?}", f.display());
        }
    }
}

#[test]
fn the_controller_runs_unprivileged() {
    use k8s_openapi::api::apps::v1::Deployment;
    let docs = documents(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/20-controller.yaml"));
    let d: Deployment = serde_yaml::from_value(docs[0].clone()).unwrap();
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(c.resources.as_ref().unwrap().limits.is_some());
    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
}

/// The namespaced Role grants exactly what the cluster-wide ClusterRole grants, so the
/// two modes cannot drift apart.
#[test]
fn the_namespaced_role_has_the_cluster_roles_rules() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    fn first<T: serde::de::DeserializeOwned>(path: &Path, kind: &str) -> T {
        let docs = documents(path);
        let doc = docs.iter().find(|d| d["kind"] == kind).expect(kind);
        serde_yaml::from_value(doc.clone()).unwrap()
    }
    let cluster_role: ClusterRole = first(&root.join("config/base/10-rbac.yaml"), "ClusterRole");
    let role: Role = first(&root.join("config/namespaced/rbac.yaml"), "Role");
    assert_eq!(role.rules, cluster_role.rules);
    let kustomization = std::fs::read_to_string(root.join("config/namespaced/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("--namespace=apps") && role.metadata.namespace.as_deref() == Some("apps"));
}

/// The README's state table names exactly the states of `weir_core::state::Kind`, and its
/// transition table is `weir_core::engine::TRANSITIONS` (`WEIR_BLESS=1` rewrites it).
#[test]
fn the_readmes_state_machine_is_the_code() {
    use strum::IntoEnumIterator;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let section = readme
        .split("### The state machine")
        .nth(1)
        .expect("a state machine section");
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("| state |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .collect();
    let kinds: Vec<&str> = weir_core::state::Kind::iter().map(|k| k.as_str()).collect();
    assert_eq!(rows, kinds);
    let (begin, end) = (
        "<!-- transitions: generated from engine::TRANSITIONS -->\n",
        "<!-- /transitions -->",
    );
    let start = readme.find(begin).expect("the transitions marker") + begin.len();
    let stop = start + readme[start..].find(end).expect("the end of the transitions");
    let table = weir::engine::transitions_markdown();
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &readme[..start], &readme[stop..])).unwrap();
        return;
    }
    assert_eq!(
        readme[start..stop],
        table,
        "run WEIR_BLESS=1 cargo test --test manifests to regenerate"
    );
}

/// A file that is not YAML gets one answer at once (the reader used to repeat its first
/// error forever, growing until the kernel killed it).
#[test]
fn a_file_that_is_not_yaml_is_refused_at_once() {
    let started = std::time::Instant::now();
    let results =
        weir::cli::validate_documents("apiVersion: weir.dev/v1alpha1\nkind: Rollout\nspec: [this is: not, {valid\n");
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0][0].starts_with("not YAML"), "{results:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

/// A value of the wrong type is refused with the path of its field.
#[test]
fn a_wrong_type_names_its_field() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dev/40-rollout.yaml")).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["spec"]["steps"][0]["weight"] = serde_yaml::Value::String("10%".into());
    let results = weir::cli::validate_documents(&serde_yaml::to_string(&doc).unwrap());
    assert!(
        results[0][0].starts_with("spec.steps[0].weight: invalid type: string \"10%\", expected u32"),
        "{results:?}"
    );
}

/// A latency bound reads as milliseconds or as a duration, the same either way.
#[test]
fn a_latency_bound_is_a_number_of_milliseconds_or_a_duration() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dev/40-rollout.yaml")).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for bound in [serde_yaml::Value::from(500), "500ms".into(), "0.5s".into()] {
        doc["spec"]["analysis"]["metrics"][1]["max"] = bound.clone();
        let results = weir::cli::validate_documents(&serde_yaml::to_string(&doc).unwrap());
        assert_eq!(results, [Vec::<String>::new()], "{bound:?}");
    }
}

/// Whatever the API server lets through in the untyped `max` (a list nested far deeper
/// than serde_json's recursion limit of 128, say) still reads: a Rollout that failed to
/// read would fail weir's whole list of Rollouts. The plan then refuses it, naming the field.
#[test]
fn anything_in_a_bound_reads_and_is_refused_by_the_plan() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dev/40-rollout.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut json = serde_json::to_value(&doc).unwrap();
    for (found, bound) in [
        ("a list", format!("{}{}", "[".repeat(5000), "]".repeat(5000))),
        ("a map", r#"{"ms": {"a": [1, 2, {"b": null}]}}"#.to_string()),
        ("a boolean", "true".to_string()),
    ] {
        json["spec"]["analysis"]["metrics"][1]["max"] = serde_json::Value::Null;
        let text = serde_json::to_string(&json)
            .unwrap()
            .replace("\"max\":null", &format!("\"max\":{bound}"));
        let rollout: weir::api::Rollout = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{found}: {e}"));
        let errors = weir::cli::validate_spec(&rollout.spec).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "spec.analysis.metrics[1].max: found {found}; expected a number, or a duration such as 500ms"
            )]
        );
    }
}

/// The admin's files in the shipped ConfigMap are what the controller reads at start.
#[test]
fn the_shipped_controller_configuration_is_read_by_the_controller() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/15-providers.yaml");
    let map: k8s_openapi::api::core::v1::ConfigMap = serde_yaml::from_value(documents(&path).remove(0)).unwrap();
    let data = map.data.unwrap_or_default();
    let file = |key: &str| data.get(key).cloned().unwrap_or_else(|| panic!("key {key}"));
    let admin = weir::admin::Admin {
        providers: weir::admin::providers::Providers::from_yaml(&file("providers.yaml")).expect("providers.yaml"),
        windows: weir::admin::windows::WindowDefaults::from_yaml(&file("release-windows.yaml"))
            .expect("release-windows.yaml"),
        receivers: weir::admin::receivers::Receivers::from_yaml(&file("notifications.yaml"))
            .expect("notifications.yaml"),
        webhooks: weir::admin::webhooks::WebhookPolicy::from_yaml(&file("webhooks.yaml")).expect("webhooks.yaml"),
    };
    // The example's Rollout is admitted as shipped, and the demo declares the same
    // templates as the shipped file.
    let example = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dev/40-rollout.yaml")).unwrap();
    let admitted = weir::cli::validate_bytes_as(&example, Some((&admin, Some("dev"))));
    assert_eq!(admitted, [Vec::<String>::new()]);
    let shipped: serde_yaml::Value = serde_yaml::from_str(&file("providers.yaml")).unwrap();
    let demo: serde_yaml::Value = serde_yaml::from_str(weir_testkit::devcluster::EXAMPLE_TEMPLATES).unwrap();
    assert_eq!(shipped["templates"], demo["templates"]);
    let controller =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/20-controller.yaml")).unwrap();
    for key in data.keys() {
        assert!(
            controller.contains(&format!("/etc/weir/{key}")),
            "the controller is given {key}"
        );
    }
}

/// The Grafana dashboard in config/grafana asks only for series weir exports.
#[test]
fn the_grafana_dashboard_reads_only_metrics_weir_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/weir-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // A family shows in the text only once it has a series: one of each.
    use weir::telemetry::*;
    let t = Telemetry::default();
    let rollout = RolloutLabels {
        namespace: "dev".into(),
        name: "backend".into(),
    };
    t.canary_weight.get_or_create(&rollout).set(10);
    let phase = PhaseLabels {
        namespace: "dev".into(),
        name: "backend".into(),
        phase: "Progressing".into(),
    };
    t.phase.get_or_create(&phase).set(1);
    let result = ResultLabels { result: "ok".into() };
    for family in [&t.reconciles, &t.decisions, &t.prometheus_queries] {
        family.get_or_create(&result).inc();
    }
    let outcome = OutcomeLabels {
        outcome: "Promoted".into(),
    };
    t.releases.get_or_create(&outcome).observe(60.0);
    let verdict = VerdictLabels {
        metric: "custom".into(),
        verdict: "Pass".into(),
    };
    t.verdicts.get_or_create(&verdict).inc();
    let call = CallLabels {
        kind: "Started".into(),
        result: "delivered".into(),
    };
    t.notifications.get_or_create(&call).inc();
    t.webhook_calls.get_or_create(&call).inc();
    let mut exported = String::new();
    prometheus_client::encoding::text::encode(&mut exported, &t.registry).unwrap();
    let families: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut asked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !token.starts_with("weir_") {
                    continue;
                }
                asked += 1;
                let family = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| token.strip_suffix(suffix))
                    .unwrap_or(token);
                assert!(
                    families.contains(&family),
                    "panel {:?} asks for {token}, which weir does not export ({families:?})",
                    panel["title"]
                );
            }
        }
    }
    assert!(asked >= 15, "{asked} series asked for");
}

/// weir reads only the Secrets the admin's files name: the Role lists each by name and
/// grants no Secret without `resourceNames`.
#[test]
fn weir_reads_only_the_secrets_the_admins_files_name() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/15-providers.yaml");
    let map: k8s_openapi::api::core::v1::ConfigMap = serde_yaml::from_value(documents(&path).remove(0)).unwrap();
    let data = map.data.unwrap_or_default();
    let mut named = Vec::new();
    for key in ["providers.yaml", "notifications.yaml"] {
        let file: serde_yaml::Value = serde_yaml::from_str(&data[key]).unwrap();
        let entries = file["providers"]
            .as_sequence()
            .into_iter()
            .chain(file["receivers"].as_sequence());
        for entry in entries.flatten() {
            named.extend(entry["secretRef"]["name"].as_str().map(str::to_string));
            named.extend(entry["urlSecret"].as_str().map(str::to_string));
            named.extend(entry["signingSecret"].as_str().map(str::to_string));
        }
    }
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/10-rbac.yaml");
    let mut granted = Vec::new();
    for doc in documents(&rbac) {
        for rule in doc["rules"].as_sequence().into_iter().flatten() {
            let resources = rule["resources"].as_sequence().cloned().unwrap_or_default();
            if !resources.iter().any(|r| r.as_str() == Some("secrets")) {
                continue;
            }
            let names = rule["resourceNames"].as_sequence().cloned().unwrap_or_default();
            assert!(
                !names.is_empty(),
                "{}: a rule grants every Secret",
                doc["metadata"]["name"].as_str().unwrap_or_default()
            );
            assert_eq!(
                doc["kind"].as_str(),
                Some("Role"),
                "Secrets only in weir's own namespace"
            );
            granted.extend(names.iter().filter_map(|n| n.as_str().map(str::to_string)));
        }
    }
    for name in &named {
        assert!(
            granted.contains(name),
            "Secret {name} is named by the admin's files but not granted"
        );
    }
}

/// The NetworkPolicy opens /metrics to the monitoring namespace only, the probes to the
/// kubelet, and lets weir reach DNS, the API server, its provider and the tenants'
/// Services, never the cloud metadata service.
#[test]
fn the_network_policy_keeps_metrics_to_monitoring_and_egress_to_what_weir_calls() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/30-network-policy.yaml");
    let policy: NetworkPolicy = serde_yaml::from_value(documents(&path).remove(0)).unwrap();
    let spec = policy.spec.unwrap();
    let controller =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/20-controller.yaml")).unwrap();
    assert!(controller.contains("--metrics-addr=0.0.0.0:9090") && controller.contains("--http-addr=0.0.0.0:8080"));
    let port = |p: &k8s_openapi::api::networking::v1::NetworkPolicyPort| match &p.port {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => *n,
        _ => 0,
    };
    for rule in spec.ingress.unwrap() {
        let ports: Vec<i32> = rule.ports.iter().flatten().map(port).collect();
        if ports.contains(&9090) {
            let from = rule.from.expect("/metrics from somewhere in particular");
            let ns = from[0]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .clone()
                .unwrap();
            assert_eq!(ns["kubernetes.io/metadata.name"], "monitoring");
        } else {
            assert_eq!(ports, [8080], "only the probes are open to all");
        }
    }
    let egress = spec.egress.unwrap();
    let ports: Vec<i32> = egress.iter().flat_map(|r| r.ports.iter().flatten().map(port)).collect();
    for needed in [53, 443, 6443, 9090] {
        assert!(ports.contains(&needed), "egress to port {needed}");
    }
    let blocks: Vec<_> = egress
        .iter()
        .flat_map(|r| r.to.iter().flatten())
        .filter_map(|p| p.ip_block.clone())
        .collect();
    assert!(
        blocks
            .iter()
            .all(|b| b.except.iter().flatten().any(|e| e == "169.254.0.0/16"))
    );
}
