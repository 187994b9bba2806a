//! The `weir` command: the controller, the CRD, offline validation, and the commands a
//! person steers a canary with.

pub mod dashboard;
pub mod report;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

use crate::Error;
use crate::admin::Admin;
use crate::admin::providers::Providers;
use crate::admin::receivers::Receivers;
use crate::admin::webhooks::WebhookPolicy;
use crate::admin::windows::WindowDefaults;
use crate::api::{PAUSED_ANNOTATION, REQUEST_ANNOTATION, Rollout, RolloutSpec, RolloutStatus};
use crate::controller;
use crate::controller::leader::Election;
use crate::plan;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Progressive delivery for Kubernetes: Istio canaries judged by Prometheus"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// The kubeconfig context to use (default: the current one), like kubectl's.
    #[arg(long, global = true)]
    pub context: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// The cluster admin's files, for the controller and for `weir validate`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AdminFiles {
    /// The metric providers Rollouts may name, their metric templates and the rule for
    /// PromQL written in Rollouts (a YAML file, see the README's security section).
    #[arg(long, env = "WEIR_PROVIDERS", conflicts_with = "prometheus")]
    pub providers: Option<PathBuf>,
    /// Shortcut for one default provider, named `prometheus`, at this URL.
    #[arg(long, env = "WEIR_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// The admin's default release windows, per namespace or for all (a YAML file, see
    /// the README): for Rollouts that set none of their own.
    #[arg(long, env = "WEIR_RELEASE_WINDOWS")]
    pub release_windows: Option<PathBuf>,
    /// Where notifications go: Slack, Teams, signed webhooks (a YAML file, see the
    /// README). A Rollout names receivers from it in `spec.notify`.
    #[arg(long, env = "WEIR_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
    /// Which addresses Rollouts' webhooks may call (a YAML file, see the README).
    /// Default: Services of the Rollout's own namespace only.
    #[arg(long, env = "WEIR_WEBHOOKS")]
    pub webhooks: Option<PathBuf>,
}

impl AdminFiles {
    /// Were any given (`weir validate` admits only then)?
    fn any(&self) -> bool {
        self.providers.is_some()
            || self.prometheus.is_some()
            || self.release_windows.is_some()
            || self.notifications.is_some()
            || self.webhooks.is_some()
    }

    /// Reads every file given; each refuses itself whole, naming the entry.
    pub fn load(&self) -> Result<Admin, Error> {
        let read = |path: &PathBuf| std::fs::read_to_string(path);
        Ok(Admin {
            providers: match (&self.providers, &self.prometheus) {
                (Some(file), _) => Providers::from_yaml(&read(file)?)?,
                (None, Some(url)) => Providers::single(url)?,
                (None, None) => Providers::default(),
            },
            windows: match &self.release_windows {
                Some(file) => WindowDefaults::from_yaml(&read(file)?)?,
                None => WindowDefaults::default(),
            },
            receivers: match &self.notifications {
                Some(file) => Receivers::from_yaml(&read(file)?)?,
                None => Receivers::default(),
            },
            webhooks: match &self.webhooks {
                Some(file) => WebhookPolicy::from_yaml(&read(file)?)?,
                None => WebhookPolicy::default(),
            },
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the current kubeconfig (or in-cluster config).
    Controller {
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "127.0.0.1:8080", env = "WEIR_HTTP_ADDR")]
        http_addr: SocketAddr,
        /// Serve /metrics here instead, apart from the probes (so that a NetworkPolicy
        /// can open it to the monitoring namespace only).
        #[arg(long, env = "WEIR_METRICS_ADDR")]
        metrics_addr: Option<SocketAddr>,
        /// Rollouts reconciled at once.
        #[arg(long, default_value_t = 64)]
        concurrency: u16,
        /// Watch one namespace only (default: all).
        #[arg(long, env = "WEIR_NAMESPACE")]
        namespace: Option<String>,
        #[command(flatten)]
        admin: AdminFiles,
        /// weir's own namespace: providers' Secrets are read from here only.
        #[arg(long, env = "POD_NAMESPACE", default_value = "weir-system")]
        secrets_namespace: String,
        /// The cluster's DNS domain: webhooks to Services are called by fully
        /// qualified name (`<svc>.<ns>.svc.<domain>.`), so no search list applies.
        #[arg(long, env = "WEIR_CLUSTER_DOMAIN", default_value = "cluster.local")]
        cluster_domain: String,
        /// Run as one of several replicas: elect a leader on a Lease in weir's own
        /// namespace (`--secrets-namespace`); only the leader runs the controller.
        #[arg(long, env = "WEIR_LEADER_ELECT")]
        leader_elect: bool,
        /// How long the leader's Lease lasts after its last renewal: a standby takes
        /// over at most this long after the leader died.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        lease_duration: std::time::Duration,
        /// This replica's name in the Lease. Default: the pod's name.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
    },
    /// Print the Rollout CRD as YAML.
    Crd,
    /// Check Rollout files offline with the controller's own validation (schema CEL
    /// rules and all). Given the admin's files, also what weir admits for the namespace:
    /// providers, templates, tenant PromQL, receivers, webhook addresses.
    Validate {
        files: Vec<PathBuf>,
        /// The namespace the Rollouts would be created in (default: each one's own
        /// `metadata.namespace`, else `default`).
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        admin: AdminFiles,
    },
    /// Show a Rollout: step, weights, last metric values, and why it waits.
    Status {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Every Rollout: phase, step, canary weight, last verdict, what it waits for.
    Get {
        /// Only these Rollouts (default: all in the namespace).
        names: Vec<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Keep watching: print the table again whenever a Rollout changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// A live web page of every Rollout and of one release: weights, error and slow
    /// ratios against their bounds, every decision (read-only; loopback by default).
    Dashboard {
        /// Where to serve it.
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: std::net::SocketAddr,
        /// The Prometheus that scrapes the mesh (e.g. a port-forward), for the ratio charts.
        #[arg(long, env = "WEIR_PROMETHEUS")]
        prometheus: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// The shortest interval a chart point covers: at least twice Prometheus's
        /// scrape interval.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Another `Host` (with its port) the dashboard answers, e.g. through a tunnel;
        /// by default only loopback names of `--addr` (no DNS rebinding).
        #[arg(long)]
        allow_host: Vec<String>,
    },
    /// Print a shell completion script (e.g. `weir completion bash > /etc/bash_completion.d/weir`).
    Completion { shell: clap_complete::Shell },
    /// A Rollout's releases: the one in progress, then the last ones, newest first.
    History {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// What happened overnight: every release that started or ended in the window.
    Report {
        /// How far back, e.g. 12h, 3d.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Pass the current step now, without waiting for its analysis.
    Promote(Target),
    /// Roll the canary back now.
    Abort(Target),
    /// Try a rolled-back revision again.
    Retry(Target),
    /// Hold the canary at its step until `weir resume`.
    Pause(Target),
    /// Continue a paused canary.
    Resume(Target),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Output {
    Table,
    Json,
}

fn print_rows(rows: &[report::ReportRow], output: Output, with_namespace: bool) -> Result<(), Error> {
    match output {
        Output::Table => print!("{}", report::table(rows, with_namespace)),
        Output::Json => println!("{}", serde_json::to_string_pretty(rows)?),
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct Target {
    pub name: String,
    /// Default: the kubeconfig context's namespace, like kubectl.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// A client for the kubeconfig's context (or `--context`), in-cluster config otherwise.
async fn connect(context: Option<&str>) -> Result<Client, Error> {
    let config = match context {
        None => kube::Config::infer().await?,
        Some(name) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(name.into()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::Usage(format!("--context {name}: {e}")))?
        }
    };
    Ok(Client::try_from(config)?)
}

/// The Rollouts API of every namespace (`-A`), else as `rollouts`.
async fn scope(context: Option<&str>, namespace: Option<&str>, all: bool) -> Result<Api<Rollout>, Error> {
    match all {
        true => Ok(Api::all(connect(context).await?)),
        false => Ok(rollouts(context, namespace).await?.0),
    }
}

/// The Rollouts API in `namespace`, or the context's namespace like kubectl.
async fn rollouts(context: Option<&str>, namespace: Option<&str>) -> Result<(Api<Rollout>, String), Error> {
    let client = connect(context).await?;
    let ns = namespace.unwrap_or(client.default_namespace()).to_string();
    Ok((Api::namespaced(client, &ns), ns))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command, cli.context.as_deref()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

// Long: one arm per subcommand of `weir`; each arm is a call or two.
async fn run(command: Command, context: Option<&str>) -> Result<ExitCode, Error> {
    match command {
        Command::Controller {
            http_addr,
            metrics_addr,
            concurrency,
            namespace,
            admin,
            secrets_namespace,
            cluster_domain,
            leader_elect,
            lease_duration,
            identity,
        } => {
            let election = leader_elect.then(|| Election {
                namespace: secrets_namespace.clone(),
                lease: "weir-leader".into(),
                identity: identity.unwrap_or_else(|| {
                    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "weir".into());
                    format!("{host}-{}", std::process::id())
                }),
                duration: lease_duration,
            });
            let admin = admin.load()?;
            let client = Client::try_default().await?;
            controller::run(
                client,
                controller::Options {
                    http_addr,
                    metrics_addr,
                    concurrency,
                    namespace,
                    admin,
                    secrets_namespace,
                    cluster_domain,
                    election,
                },
            )
            .await?;
        }
        Command::Crd => print!("{}", crd_yaml()?),
        Command::Validate {
            files,
            namespace,
            admin,
        } => {
            let admin = match admin.any() {
                true => Some(admin.load()?),
                false => None,
            };
            let mut ok = true;
            for file in files {
                let bytes = std::fs::read(&file)?;
                let admission = admin.as_ref().map(|a| (a, namespace.as_deref()));
                for (i, problems) in validate_bytes_as(&bytes, admission).into_iter().enumerate() {
                    if problems.is_empty() {
                        println!("{}: Rollout #{}: valid", file.display(), i + 1);
                    } else {
                        ok = false;
                        for p in problems {
                            println!("{}: Rollout #{}: {p}", file.display(), i + 1);
                        }
                    }
                }
            }
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Status { name, namespace } => {
            let (api, _) = rollouts(context, namespace.as_deref()).await?;
            let rollout = api.get(&name).await?;
            print!("{}", describe(&rollout));
        }
        Command::History {
            name,
            namespace,
            output,
        } => {
            let (api, _) = rollouts(context, namespace.as_deref()).await?;
            print_rows(&report::releases(&api.get(&name).await?), output, false)?;
        }
        Command::Report {
            since,
            namespace,
            all_namespaces,
            output,
        } => {
            let api = scope(context, namespace.as_deref(), all_namespaces).await?;
            let rollouts = api.list(&Default::default()).await?.items;
            let from = jiff::Timestamp::now()
                - jiff::SignedDuration::try_from(since).map_err(|e| Error::Usage(e.to_string()))?;
            print_rows(&report::since(&rollouts, from), output, all_namespaces)?;
        }
        Command::Get {
            names,
            namespace,
            all_namespaces,
            watch,
        } => {
            let api = scope(context, namespace.as_deref(), all_namespaces).await?;
            report::get(api, &names, all_namespaces, watch).await?;
        }
        Command::Dashboard {
            addr,
            prometheus,
            namespace,
            all_namespaces,
            interval,
            allow_host,
        } => {
            let client = connect(context).await?;
            let namespace = match all_namespaces {
                true => None,
                false => Some(namespace.unwrap_or_else(|| client.default_namespace().to_string())),
            };
            crate::cli::dashboard::serve(client, namespace, prometheus, interval, addr, &allow_host).await?;
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "weir", &mut std::io::stdout());
        }
        Command::Promote(t) => request(context, &t, "promote").await?,
        Command::Abort(t) => request(context, &t, "abort").await?,
        Command::Retry(t) => request(context, &t, "retry").await?,
        Command::Pause(t) => annotate(context, &t, PAUSED_ANNOTATION, Some("true")).await?,
        Command::Resume(t) => annotate(context, &t, PAUSED_ANNOTATION, None).await?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn crd_yaml() -> Result<String, Error> {
    // Long lines stay on one line (a CEL rule folded over lines reads worse in a diff).
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX };
    Ok(serde_saphyr::to_string_with_options(&Rollout::crd(), options)?)
}

/// Validates every Rollout in a (multi-document) YAML text: the CRD's CEL rules, as the
/// API server would run them, then the controller's own checks. One list per Rollout.
/// `validate_documents` for a file's bytes: text that is not UTF-8 is one problem.
pub fn validate_bytes(bytes: &[u8]) -> Vec<Vec<String>> {
    validate_bytes_as(bytes, None)
}

/// What `weir validate` checks of a file: with the admin's configuration and a namespace
/// (else each Rollout's own), also the controller's admission.
pub type Admission<'a> = Option<(&'a Admin, Option<&'a str>)>;

/// `validate_bytes`, and admission when `admission` is given.
pub fn validate_bytes_as(bytes: &[u8], admission: Admission) -> Vec<Vec<String>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => validate_documents_as(text, admission),
        Err(e) => vec![vec![format!("not UTF-8: {e}")]],
    }
}

/// Every Rollout of a (multi-document) YAML text, validated; documents of other kinds
/// are passed over. Size and nesting are bounded by the reader (`crate::yaml`).
pub fn validate_documents(text: &str) -> Vec<Vec<String>> {
    validate_documents_as(text, None)
}

fn validate_documents_as(text: &str, admission: Admission) -> Vec<Vec<String>> {
    match crate::yaml::documents(text) {
        Ok(docs) => docs
            .into_iter()
            .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Rollout"))
            .map(|d| validate_value(d, admission))
            .collect(),
        Err(problem) => vec![vec![problem]],
    }
}

fn validate_value(value: serde_json::Value, admission: Admission) -> Vec<String> {
    let rollout: Rollout = match serde_path_to_error::deserialize(value) {
        Ok(r) => r,
        Err(e) => return vec![format!("{}: {}", e.path(), e.inner())],
    };
    let mut problems: Vec<String> = match rollout.validate_cel() {
        Ok(()) => vec![],
        Err(errors) => errors
            .to_string()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .map(|l| format!("the API server refuses it: {l}"))
            .collect(),
    };
    let checked = match admission {
        None => plan::plan(&rollout.spec).map(drop),
        Some((admin, namespace)) => {
            let own = rollout.metadata.namespace.clone();
            let namespace = namespace.or(own.as_deref()).unwrap_or("default");
            admin.admit(namespace, &rollout.spec).map(drop)
        }
    };
    if let Err(errors) = checked {
        problems.extend(errors.iter().map(ToString::to_string));
    }
    problems.dedup();
    problems
}

/// Parses and checks a spec alone (used by tests and examples).
pub fn validate_spec(spec: &RolloutSpec) -> Result<plan::Plan, Vec<weir_core::spec::SpecError>> {
    plan::plan(spec)
}

async fn annotate(context: Option<&str>, t: &Target, key: &str, value: Option<&str>) -> Result<(), Error> {
    let (api, namespace) = rollouts(context, t.namespace.as_deref()).await?;
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(&t.name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    println!(
        "rollout {}/{}: {key}={}",
        namespace,
        t.name,
        value.unwrap_or("(removed)")
    );
    Ok(())
}

async fn request(context: Option<&str>, t: &Target, verb: &str) -> Result<(), Error> {
    // The nonce makes each request new, so the controller acts on it exactly once.
    let nonce = jiff::Timestamp::now().as_nanosecond();
    annotate(context, t, REQUEST_ANNOTATION, Some(&format!("{verb}/{nonce}"))).await
}

fn fmt_value(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// The human view of a Rollout's status (`weir status`).
/// Each webhook's last call: what it was asked and what it said.
fn describe_webhooks(out: &mut String, status: &RolloutStatus) {
    if status.webhooks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  webhooks   {:<20} {:<18} {:<12} {:>4} {:<9} {:<21} DETAIL",
        "NAME", "TYPE", "REVISION", "STEP", "ANSWER", "AT"
    );
    for w in &status.webhooks {
        let kind = serde_json::to_value(w.kind).ok();
        let _ = writeln!(
            out,
            "             {:<20} {:<18} {:<12} {:>4} {:<9} {:<21} {}",
            w.name,
            kind.as_ref().and_then(|k| k.as_str()).unwrap_or("?"),
            w.revision,
            w.step,
            w.answer,
            w.at,
            w.detail
        );
    }
}

// Long: `weir status` prints one section per part of the status, in the order a person
// reads them; splitting it would scatter one page of output over many functions.
pub fn describe(rollout: &Rollout) -> String {
    let status: RolloutStatus = rollout.status.clone().unwrap_or_default();
    let name = format!(
        "{}/{}",
        rollout.metadata.namespace.as_deref().unwrap_or("default"),
        rollout.metadata.name.as_deref().unwrap_or("?")
    );
    let steps: Vec<String> = rollout.spec.steps.iter().map(|s| s.weight.to_string()).collect();
    let mut out = String::new();
    let _ = writeln!(out, "Rollout {name}: {:?}", status.phase);
    let _ = writeln!(out, "  {}", status.message);
    let _ = writeln!(out, "  target     Deployment {}", rollout.spec.target_ref.name);
    let _ = writeln!(out, "  stable     {}", status.stable_revision.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "  canary     {}", status.canary_revision.as_deref().unwrap_or("-"));
    let step = status
        .current_step
        .map(|i| format!("{}/{}", i + 1, steps.len()))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "  step       {step} of [{}]  state {}",
        steps.join(", "),
        status.state.name()
    );
    let _ = writeln!(
        out,
        "  weights    stable {}% / canary {}%",
        100 - status.canary_weight.min(100),
        status.canary_weight
    );
    if let Some(a) = &status.analysis {
        let _ = writeln!(
            out,
            "  analysis   last {} -> {}; next {}; breaches {}; Prometheus errors in a row {}",
            a.last_checked_at.as_deref().unwrap_or("-"),
            a.last_verdict.as_deref().unwrap_or("-"),
            a.next_check_at.as_deref().unwrap_or("-"),
            a.failures,
            a.consecutive_errors
        );
        if !a.metrics.is_empty() {
            let _ = writeln!(
                out,
                "    {:<24} {:<13} {:>10} {:>10} {:>16} {:>16} {:>10}",
                "METRIC", "VERDICT", "CANARY", "BASELINE", "CANARY BAD/N", "BASELINE BAD/N", "LAMBDA"
            );
            for m in &a.metrics {
                let counts = |c: Option<crate::api::Counts>| {
                    c.map(|c| format!("{}/{}", c.bad, c.requests))
                        .unwrap_or_else(|| "-".into())
                };
                let _ = writeln!(
                    out,
                    "    {:<24} {:<13} {:>10} {:>10} {:>16} {:>16} {:>10}",
                    m.name,
                    m.verdict,
                    fmt_value(m.canary_value),
                    fmt_value(m.baseline_value),
                    counts(m.canary_counts),
                    counts(m.baseline_counts),
                    m.lambda.map(|l| format!("{l:.3e}")).unwrap_or_else(|| "-".into())
                );
                let _ = writeln!(out, "      {}", m.reason);
                if let (Some(clean), Some(all)) = (m.clean_canary_counts, m.canary_counts)
                    && clean != all
                {
                    let _ = writeln!(
                        out,
                        "      absolute bound judged on {}/{} canary requests, outside shared incidents",
                        clean.bad, clean.requests
                    );
                }
            }
        }
    }
    describe_webhooks(&mut out, &status);
    if let Some(rb) = &status.rollback {
        let _ = writeln!(
            out,
            "  rollback   revision {} at step {} ({}%): metric {} value {} bound {}: {}",
            rb.revision,
            rb.step,
            rb.weight,
            rb.metric.as_deref().unwrap_or("-"),
            fmt_value(rb.value),
            rb.bound.as_deref().unwrap_or("-"),
            rb.reason
        );
    }
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "  condition  {}={} ({}): {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnalysisStatus, Counts, MetricStatus, Phase, RollbackRecord};

    #[test]
    fn status_shows_the_evidence_and_why() {
        let mut r: Rollout = serde_saphyr::from_str(include_str!("../../examples/dev/40-rollout.yaml")).unwrap();
        r.status = Some(RolloutStatus {
            phase: Phase::RolledBack,
            message: "rolled back revision abc at step 2/4 (25%): ...".into(),
            canary_weight: 0,
            analysis: Some(AnalysisStatus {
                failures: 0,
                last_verdict: Some("Breach".into()),
                metrics: vec![MetricStatus {
                    name: "request-success-rate".into(),
                    verdict: "Breach".into(),
                    canary_value: Some(94.0),
                    baseline_value: Some(99.9),
                    canary_counts: Some(Counts { requests: 100, bad: 6 }),
                    baseline_counts: Some(Counts { requests: 900, bad: 1 }),
                    clean_canary_counts: Some(Counts { requests: 100, bad: 6 }),
                    lambda: Some(1.2e4),
                    reason: "canary is worse than 1.5x baseline".into(),
                }],
                ..Default::default()
            }),
            rollback: Some(RollbackRecord {
                revision: "abc".into(),
                step: 2,
                weight: 25,
                metric: Some("request-success-rate".into()),
                value: Some(94.0),
                bound: Some(">= 99%".into()),
                reason: "canary is worse than 1.5x baseline".into(),
                at: "2026-11-25T00:00:00Z".into(),
            }),
            webhooks: vec![weir_core::status::WebhookRecord {
                name: "smoke".into(),
                kind: weir_core::spec::WebhookKind::PreRollout,
                revision: "abc".into(),
                step: 1,
                round: 0,
                answer: "Yes".into(),
                detail: "answered 200 OK: 10 of 10 checks".into(),
                attempts: 1,
                at: "2026-11-25T00:00:00Z".into(),
            }],
            ..Default::default()
        });
        let text = describe(&r);
        assert!(
            text.contains("smoke                pre-rollout        abc             1 Yes")
                && text.contains("answered 200 OK: 10 of 10 checks"),
            "{text}"
        );
        assert!(text.contains("Rollout dev/backend: RolledBack"), "{text}");
        assert!(text.contains("weights    stable 100% / canary 0%"), "{text}");
        assert!(
            text.contains("6/100") && text.contains("1/900") && text.contains("1.200e4"),
            "{text}"
        );
        assert!(
            text.contains("at step 2 (25%): metric request-success-rate value 94.000 bound >= 99%"),
            "{text}"
        );
    }
}
