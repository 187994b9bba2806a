//! Turns a `RolloutSpec` into a `Plan`: every default filled in, every duration parsed,
//! every check the API server's schema cannot do done here. Pure: `weir validate` and the
//! controller share it, so a file that passes offline behaves the same in the cluster.

use std::time::Duration;

use crate::hooks::HookPlan;
use crate::spec::{Bound, JudgeKind, Metric, Problems, RolloutSpec, SpecError};
pub use crate::spec::{is_object_name, parse_duration};
use crate::windows::Windows;

pub const SUCCESS_RATE: &str = "request-success-rate";
pub const REQUEST_DURATION: &str = "request-duration";
/// Istio's standard buckets of `istio_request_duration_milliseconds` (ms); a latency
/// bound is judged at the bucket boundary it names, so it must be one of these.
pub const ISTIO_BUCKETS_MS: [f64; 13] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// Template variables a custom query may use; anything else in `{{ }}` is refused.
pub const TEMPLATE_VARIABLES: [&str; 5] = ["namespace", "target", "canary", "stable", "interval"];

/// `scaleDownDelay` when the spec does not say (or cannot be read: a canary withdrawn from
/// an invalid Rollout still drains this long).
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);

/// The objects a Rollout names. Readable from any spec, also one that does not validate,
/// so a canary can still be withdrawn safely from a Rollout that became invalid.
#[derive(Clone, Debug, PartialEq)]
pub struct Names {
    pub target: String,
    /// `<target>-canary`, the Deployment weir owns.
    pub canary: String,
    pub track_label: String,
}

impl Names {
    pub fn of(spec: &RolloutSpec) -> Names {
        Names {
            target: spec.target_ref.name.clone(),
            canary: format!("{}-canary", spec.target_ref.name),
            track_label: spec.track_label().to_string(),
        }
    }
}

/// The validated, defaulted form of a Rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub target: String,
    pub canary: String,
    pub steps: Vec<PlannedStep>,
    pub interval: Duration,
    pub tick: Duration,
    pub progress_deadline: Duration,
    pub scale_down_delay: Duration,
    pub judge: JudgeKind,
    pub failure_limit: u32,
    pub sequential: SequentialConfig,
    pub metrics: Vec<MetricPlan>,
    /// The metric provider the Rollout names; `None`: the admin's default.
    pub provider: Option<String>,
    pub track_label: String,
    /// When the canary may start, advance and be promoted; `None`: any time.
    pub windows: Option<Windows>,
    /// The webhooks weir asks, in the Rollout's order.
    pub hooks: Vec<HookPlan>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedStep {
    pub weight: u32,
    pub duration: Duration,
}

impl Plan {
    /// The step at 0-based `index`; past the end, the last step. `spec.steps` may shrink
    /// while a release is at a later step (an edit, a GitOps sync): a release never reads
    /// a step that is not there. A plan always has a step; a hand-built empty one reads
    /// as a single step to 100 %.
    pub fn step(&self, index: usize) -> PlannedStep {
        let fallback = PlannedStep {
            weight: 100,
            duration: Duration::ZERO,
        };
        self.steps.get(index).or(self.steps.last()).copied().unwrap_or(fallback)
    }

    /// The index of the last step (0 for a hand-built plan without steps).
    pub fn last_step(&self) -> usize {
        self.steps.len().saturating_sub(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SequentialConfig {
    pub alpha: f64,
    pub theta0: f64,
    pub delta: f64,
    pub min_dwell: Duration,
    pub min_requests: u64,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        SequentialConfig {
            alpha: 0.005,
            theta0: 1.2,
            delta: 3.0,
            min_dwell: Duration::from_secs(60),
            min_requests: 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricPlan {
    pub name: String,
    pub kind: MetricKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetricKind {
    /// Percent of non-5xx requests; `min` in percent.
    SuccessRate { min: f64 },
    /// Latency at `quantile` in ms must stay at or under `max_ms` (an Istio bucket bound).
    Duration { quantile: f64, max_ms: f64 },
    /// PromQL beyond the built-ins, with absolute bounds.
    Custom {
        query: Query,
        min: Option<f64>,
        max: Option<f64>,
    },
}

/// Where a custom metric's PromQL comes from. The plan says what the Rollout asked for;
/// the controller's admission (the admin's templates and rules, which the core does not
/// know) turns it into `Admitted` or refuses it. Only admitted PromQL is ever sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    /// Written in the Rollout (`query:`).
    Inline(String),
    /// A template of the admin's (`templateRef`), with the Rollout's variables.
    Template {
        name: String,
        variables: std::collections::BTreeMap<String, String>,
    },
    /// What admission let through: PromQL with only weir's own variables
    /// (`TEMPLATE_VARIABLES`) left to substitute.
    Admitted(String),
}

impl Query {
    /// The PromQL to run, once admitted.
    pub fn admitted(&self) -> Option<&str> {
        match self {
            Query::Admitted(q) => Some(q),
            _ => None,
        }
    }
}

impl MetricKind {
    /// The largest tolerated share of bad requests for a count-based metric: 5xx for the
    /// success rate, slower-than-bound for the latency quantile (p99 ≤ X ⇔ ≤ 1 % over X).
    pub fn bad_ratio_bound(&self) -> Option<f64> {
        match self {
            MetricKind::SuccessRate { min } => Some((100.0 - min) / 100.0),
            MetricKind::Duration { quantile, .. } => Some(1.0 - quantile),
            MetricKind::Custom { .. } => None,
        }
    }

    /// Human-readable bound, for status and Events.
    pub fn bound_text(&self) -> String {
        match self {
            MetricKind::SuccessRate { min } => format!(">= {min}%"),
            MetricKind::Duration { quantile, max_ms } => format!("p{} <= {max_ms}ms", quantile * 100.0),
            MetricKind::Custom { min, max, .. } => match (min, max) {
                (Some(lo), Some(hi)) => format!("in [{lo}, {hi}]"),
                (Some(lo), None) => format!(">= {lo}"),
                (None, Some(hi)) => format!("<= {hi}"),
                (None, None) => "unbounded".into(),
            },
        }
    }

    /// Is an observed value (percent, ms or custom) within the bound?
    pub fn within(&self, value: f64) -> bool {
        match self {
            MetricKind::SuccessRate { min } => value >= *min,
            MetricKind::Duration { max_ms, .. } => value <= *max_ms,
            MetricKind::Custom { min, max, .. } => min.is_none_or(|lo| value >= lo) && max.is_none_or(|hi| value <= hi),
        }
    }
}

impl Plan {
    pub fn names(&self) -> Names {
        Names {
            target: self.target.clone(),
            canary: self.canary.clone(),
            track_label: self.track_label.clone(),
        }
    }

    /// Canary replicas for a weight: the same share of the stable replicas, at least one.
    pub fn canary_replicas(stable_replicas: i32, weight: u32) -> i32 {
        let share = (i64::from(stable_replicas.max(1)) * i64::from(weight) + 99) / 100;
        i32::try_from(share.max(1)).unwrap_or(i32::MAX)
    }

    /// The Rollout's webhooks of one type, in its order.
    pub fn hooks_of(&self, kind: crate::spec::WebhookKind) -> impl Iterator<Item = &HookPlan> {
        self.hooks.iter().filter(move |h| h.kind == kind)
    }

    pub fn count_metrics(&self) -> usize {
        self.metrics
            .iter()
            .filter(|m| m.kind.bad_ratio_bound().is_some())
            .count()
    }
}

/// The names weir puts in API paths (GET by name) must be Kubernetes object names, so a
/// Rollout can neither reach another kind of object through a crafted path nor carry an
/// unbounded string.
fn check_object_names(spec: &RolloutSpec, errors: &mut Problems) {
    let mut names = vec![];
    if let Some(istio) = &spec.traffic_routing.istio {
        names.push(("trafficRouting.istio.virtualService.name", &istio.virtual_service.name));
        if let Some(dr) = &istio.destination_rule {
            names.push(("trafficRouting.istio.destinationRule.name", &dr.name));
        }
        if let Some(h) = &istio.hosts {
            names.push(("trafficRouting.istio.hosts.stableService", &h.stable_service));
            names.push(("trafficRouting.istio.hosts.canaryService", &h.canary_service));
        }
    }
    if let Some(g) = &spec.traffic_routing.gateway_api {
        names.push(("trafficRouting.gatewayAPI.httpRoute.name", &g.http_route.name));
        names.push(("trafficRouting.gatewayAPI.stableService", &g.stable_service));
        names.push(("trafficRouting.gatewayAPI.canaryService", &g.canary_service));
    }
    for (field, name) in names {
        if !is_object_name(name) {
            let shown: String = name.chars().take(64).collect();
            errors.at(field, format!("{shown:?} is not a valid object name"));
        }
    }
}

fn duration_or(field: &str, text: Option<&str>, default: Duration, errors: &mut Problems) -> Duration {
    match text.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            errors.at(field, e);
            default
        }
    }
}

/// The shortest `analysis.interval` and `analysis.tick`: each look queries the shared
/// provider, each interval asks the rollback webhooks again; below a second one Rollout
/// would take a share of them no other tenant gets.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const MIN_TICK: Duration = Duration::from_secs(1);
/// Receivers one Rollout may name.
pub const MAX_NOTIFY: usize = 8;

/// Limits that keep one tenant's Rollout from taking more than its share of what weir
/// shares between namespaces (provider queries, webhook calls, notification queues).
fn check_shared_limits(spec: &RolloutSpec, (interval, tick): (Duration, Duration), errors: &mut Problems) {
    let floor = |field: &str, value: Duration, min: Duration, errors: &mut Problems| {
        if value < min {
            errors.at(
                field,
                format!(
                    "{} is below the shortest allowed, {}",
                    humantime::format_duration(value),
                    humantime::format_duration(min)
                ),
            );
        }
    };
    floor("analysis.interval", interval, MIN_INTERVAL, errors);
    floor("analysis.tick", tick, MIN_TICK, errors);
    if spec.notify.len() > MAX_NOTIFY {
        errors.at(
            "notify",
            format!("{} receivers, at most {MAX_NOTIFY} are allowed", spec.notify.len()),
        );
    }
    for (i, name) in spec.notify.iter().enumerate() {
        if spec.notify.iter().take(i).any(|n| n == name) {
            errors.at(
                format!("notify[{i}]"),
                format!("{name:?} appears twice; name each receiver once"),
            );
        }
    }
}

/// Replaces each `{{ name }}` (spaces or not) of a template by `value(name)`; a name
/// without a value, and an unclosed `{{`, stay as written. The one reader of template
/// variables: weir's own (`TEMPLATE_VARIABLES`) at query time, an admin template's
/// parameters at admission.
pub fn substitute(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        match value(after[..close].trim()) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

fn check_template(field: &str, query: &str, errors: &mut Problems) {
    let mut rest = query;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            errors.at(format!("{field}.query"), "unclosed '{{' in query");
            return;
        };
        let var = after[..close].trim();
        if !TEMPLATE_VARIABLES.contains(&var) {
            errors.at(
                format!("{field}.query"),
                format!(
                    "unknown template variable {{{{{var}}}}}; allowed: {}",
                    TEMPLATE_VARIABLES.join(", ")
                ),
            );
        }
        rest = &after[close + 2..];
    }
}

/// `analysis.metrics[i]`, the path every problem with one metric is reported under.
fn metric_field(index: usize) -> String {
    format!("analysis.metrics[{index}]")
}

fn success_rate(field: &str, metric: &Metric, errors: &mut Problems) -> Option<MetricKind> {
    if metric.max.is_some() {
        errors.at(
            format!("{field}.max"),
            format!("{SUCCESS_RATE} takes min (percent), not max"),
        );
    }
    match metric.min {
        Some(min) if (0.0..=100.0).contains(&min) => Some(MetricKind::SuccessRate { min }),
        Some(min) => {
            errors.at(format!("{field}.min"), format!("{min} is not a percentage in 0..=100"));
            None
        }
        None => {
            errors.at(
                format!("{field}.min"),
                format!("{SUCCESS_RATE} needs min (percent), e.g. min: 99"),
            );
            None
        }
    }
}

/// A latency bound in milliseconds: a number of them, or a duration string.
fn latency_ms(field: &str, bound: &Bound) -> Result<f64, SpecError> {
    match bound {
        Bound::Number(ms) => Ok(*ms),
        Bound::Duration(text) => parse_duration(text)
            .map(|d| d.as_secs_f64() * 1000.0)
            .map_err(|e| SpecError::new(format!("{field}.max"), format!("{e}, or a number of milliseconds"))),
        Bound::Unreadable(found) => Err(unreadable(field, found)),
    }
}

fn unreadable(field: &str, found: &str) -> SpecError {
    SpecError::new(
        format!("{field}.max"),
        format!("found {found}; expected a number, or a duration such as 500ms"),
    )
}

fn request_duration(field: &str, metric: &Metric, errors: &mut Problems) -> Option<MetricKind> {
    if metric.min.is_some() {
        errors.at(
            format!("{field}.min"),
            format!("{REQUEST_DURATION} takes max (a latency), not min"),
        );
    }
    let quantile = metric.quantile.unwrap_or(0.99);
    if !(quantile > 0.0 && quantile < 1.0) {
        errors.at(format!("{field}.quantile"), format!("{quantile} must be in (0, 1)"));
    }
    let Some(bound) = &metric.max else {
        errors.at(
            format!("{field}.max"),
            format!("{REQUEST_DURATION} needs max, e.g. max: 500ms"),
        );
        return None;
    };
    let max_ms = latency_ms(field, bound).map_err(|e| errors.push(e)).ok()?;
    if !ISTIO_BUCKETS_MS.contains(&max_ms) {
        errors.at(
            format!("{field}.max"),
            format!(
                "{max_ms}ms is not a bucket bound of Istio's histogram \
             (one of {ISTIO_BUCKETS_MS:?} ms); latency can only be judged at a bucket bound"
            ),
        );
    }
    Some(MetricKind::Duration { quantile, max_ms })
}

/// The longest value of a template variable.
pub const MAX_VARIABLE_BYTES: usize = 256;

/// Where a custom metric's PromQL comes from: exactly one of `query` and `templateRef`.
fn custom_query(field: &str, metric: &Metric, errors: &mut Problems) -> Option<Query> {
    match (&metric.query, &metric.template_ref) {
        (Some(_), Some(_)) => {
            errors.at(field, "set one of query and templateRef, not both");
            None
        }
        (Some(query), None) => {
            check_template(field, query, errors);
            Some(Query::Inline(query.clone()))
        }
        (None, Some(template)) => {
            for (name, value) in &metric.template_variables {
                let at = format!("{field}.templateVariables.{name}");
                if value.len() > MAX_VARIABLE_BYTES || value.contains("{{") || value.contains("}}") {
                    errors.at(
                        at,
                        format!("expected at most {MAX_VARIABLE_BYTES} bytes without '{{{{' or '}}}}'"),
                    );
                }
            }
            Some(Query::Template {
                name: template.name.clone(),
                variables: metric.template_variables.clone(),
            })
        }
        (None, None) => None,
    }
}

fn custom(field: &str, metric: &Metric, query: Query, errors: &mut Problems) -> Option<MetricKind> {
    if metric.quantile.is_some() {
        errors.at(
            format!("{field}.quantile"),
            format!("applies only to {REQUEST_DURATION}"),
        );
    }
    let max = match &metric.max {
        Some(Bound::Duration(text)) => {
            errors.at(
                format!("{field}.max"),
                format!("{text:?} is a duration; a custom metric's bound is a number"),
            );
            return None;
        }
        Some(Bound::Unreadable(found)) => {
            errors.push(unreadable(field, found));
            return None;
        }
        other => other.as_ref().and_then(Bound::number),
    };
    if let (Some(lo), Some(hi)) = (metric.min, max)
        && lo > hi
    {
        errors.at(field, format!("min {lo} exceeds max {hi}"));
    }
    Some(MetricKind::Custom {
        query,
        min: metric.min,
        max,
    })
}

fn metric_plan(index: usize, metric: &Metric, errors: &mut Problems) -> Option<MetricPlan> {
    let field = metric_field(index);
    if !is_object_name(&metric.name) || metric.name.contains('.') || metric.name.len() > 63 {
        errors.at(
            format!("{field}.name"),
            format!(
                "{:?} is not a metric name: expected lowercase letters, digits and '-' (at most 63)",
                metric.name
            ),
        );
        return None;
    }
    if metric.template_ref.is_none() && !metric.template_variables.is_empty() {
        errors.at(
            format!("{field}.templateVariables"),
            "only a templateRef takes variables",
        );
    }
    if metric.min.is_none() && metric.max.is_none() {
        errors.at(field, format!("{} needs a min or a max bound", metric.name));
        return None;
    }
    let kind = match (metric.name.as_str(), custom_query(&field, metric, errors)) {
        (SUCCESS_RATE, None) => success_rate(&field, metric, errors)?,
        (REQUEST_DURATION, None) => request_duration(&field, metric, errors)?,
        (_, Some(query)) => custom(&field, metric, query, errors)?,
        (other, None) => {
            errors.at(
                format!("{field}.name"),
                format!(
                    "{other:?} is not a built-in metric ({SUCCESS_RATE}, {REQUEST_DURATION}); name a templateRef of the cluster admin's"
                ),
            );
            return None;
        }
    };
    Some(MetricPlan {
        name: metric.name.clone(),
        kind,
    })
}

/// Validates a spec and fills in defaults. Returns every problem found, each naming its
/// field, so one `weir validate` run shows them all.
// Long: assembles the plan from its checked parts, one field each.
pub fn plan(spec: &RolloutSpec) -> Result<Plan, Vec<SpecError>> {
    let mut errors = Problems::default();
    check_target_and_routing(spec, &mut errors);
    let interval = duration_or(
        "analysis.interval",
        spec.analysis.interval.as_deref(),
        Duration::from_secs(60),
        &mut errors,
    );
    let tick = duration_or(
        "analysis.tick",
        spec.analysis.tick.as_deref(),
        Duration::from_secs(5),
        &mut errors,
    );
    check_shared_limits(spec, (interval, tick), &mut errors);
    let steps = planned_steps(spec, interval, &mut errors);
    let sequential = sequential_config(spec, &mut errors);
    let metrics = planned_metrics(spec, &mut errors);
    let provider = spec.analysis.provider.clone();
    if let Some(name) = &provider
        && !is_object_name(name)
    {
        errors.at("analysis.provider", format!("{name:?} is not a valid provider name"));
    }
    let progress_deadline = duration_or(
        "progressDeadline",
        spec.progress_deadline.as_deref(),
        Duration::from_secs(600),
        &mut errors,
    );
    let scale_down_delay = duration_or(
        "scaleDownDelay",
        spec.scale_down_delay.as_deref(),
        DEFAULT_SCALE_DOWN_DELAY,
        &mut errors,
    );
    let track_label = spec.track_label().to_string();
    if track_label.is_empty() || track_label.len() > 317 {
        errors.at("trackLabel", format!("{track_label:?} is not a label key"));
    }
    let windows = spec
        .release_windows
        .as_ref()
        .and_then(|w| Windows::parse("releaseWindows", w, &mut errors));
    let hooks = crate::hooks::plan("webhooks", &spec.webhooks, &mut errors);
    if !errors.is_empty() {
        return Err(errors.into_vec());
    }
    Ok(Plan {
        target: spec.target_ref.name.clone(),
        canary: Names::of(spec).canary,
        steps,
        interval,
        tick,
        progress_deadline,
        scale_down_delay,
        judge: spec.analysis.judge,
        failure_limit: spec.analysis.failure_limit.unwrap_or(1),
        sequential,
        metrics,
        provider,
        track_label,
        windows,
        hooks,
    })
}

/// `targetRef`, the names the spec gives, and one routing mode (subsets or hosts).
fn check_target_and_routing(spec: &RolloutSpec, errors: &mut Problems) {
    if spec.target_ref.kind != "Deployment" {
        errors.at(
            "targetRef.kind",
            format!("{:?} is not supported; use Deployment", spec.target_ref.kind),
        );
    }
    if !is_object_name(&spec.target_ref.name) {
        let shown: String = spec.target_ref.name.chars().take(64).collect();
        errors.at("targetRef.name", format!("{shown:?} is not a valid object name"));
    }
    check_object_names(spec, errors);
    check_router(spec, errors);
    if Names::of(spec).canary.len() > 253 {
        errors.at(
            "targetRef.name",
            format!("{:?} is too long to name its canary", spec.target_ref.name),
        );
    }
}

/// One router, and for Istio one routing mode (subsets or hosts); two distinct Services.
fn check_router(spec: &RolloutSpec, errors: &mut Problems) {
    let routing = &spec.traffic_routing;
    if let Some(g) = &routing.gateway_api {
        if g.stable_service == g.canary_service {
            errors.at(
                "trafficRouting.gatewayAPI",
                "stableService and canaryService must differ",
            );
        }
        if g.http_route.rules.len() > 16 {
            errors.at("trafficRouting.gatewayAPI.httpRoute.rules", "at most 16 rules");
        }
    }
    let Some(istio) = &routing.istio else {
        if routing.gateway_api.is_none() {
            errors.at("trafficRouting", "set exactly one of istio or gatewayAPI");
        }
        return;
    };
    if routing.gateway_api.is_some() {
        errors.at("trafficRouting", "set exactly one of istio or gatewayAPI");
    }
    match (&istio.destination_rule, &istio.hosts) {
        (Some(_), Some(_)) | (None, None) => errors.at(
            "trafficRouting.istio",
            "set exactly one of destinationRule (subset mode) or hosts (host mode)",
        ),
        (Some(dr), None) if dr.stable_subset == dr.canary_subset => errors.at(
            "trafficRouting.istio.destinationRule",
            "stableSubset and canarySubset must differ",
        ),
        (None, Some(h)) if h.stable_service == h.canary_service => errors.at(
            "trafficRouting.istio.hosts",
            "stableService and canaryService must differ",
        ),
        _ => {}
    }
}

/// The steps: 1 to 20, weights strictly increasing in 1..=100, each with its duration
/// (the analysis interval unless it says).
fn planned_steps(spec: &RolloutSpec, interval: Duration, errors: &mut Problems) -> Vec<PlannedStep> {
    if spec.steps.is_empty() {
        errors.at("steps", "at least one step is needed");
    }
    if spec.steps.len() > 20 {
        errors.at("steps", format!("{} steps, at most 20 are allowed", spec.steps.len()));
    }
    let mut steps = Vec::new();
    let mut previous = 0;
    for (i, step) in spec.steps.iter().enumerate() {
        if !(1..=100).contains(&step.weight) {
            errors.at(
                format!("steps[{i}].weight"),
                format!("{} is not in 1..=100", step.weight),
            );
        } else if step.weight <= previous {
            errors.at(
                format!("steps[{i}].weight"),
                format!(
                    "{} does not exceed the previous step's {previous}; weights must strictly increase",
                    step.weight
                ),
            );
        }
        previous = step.weight;
        let field = format!("steps[{i}].duration");
        let duration = duration_or(&field, step.duration.as_deref(), interval, errors);
        steps.push(PlannedStep {
            weight: step.weight,
            duration,
        });
    }
    steps
}

/// The sequential judge's settings, defaulted, within the bounds its guarantees need.
fn sequential_config(spec: &RolloutSpec, errors: &mut Problems) -> SequentialConfig {
    let defaults = SequentialConfig::default();
    let seq = spec.analysis.sequential.clone().unwrap_or_default();
    let sequential = SequentialConfig {
        alpha: seq.alpha.unwrap_or(defaults.alpha),
        theta0: seq.theta0.unwrap_or(defaults.theta0),
        delta: seq.delta.unwrap_or(defaults.delta),
        min_dwell: duration_or(
            "analysis.sequential.minDwell",
            seq.min_dwell.as_deref(),
            defaults.min_dwell,
            errors,
        ),
        min_requests: seq.min_requests.unwrap_or(defaults.min_requests),
    };
    if !(sequential.alpha > 0.0 && sequential.alpha < 0.5) {
        errors.at(
            "analysis.sequential.alpha",
            format!("{} is not in (0, 0.5)", sequential.alpha),
        );
    }
    if sequential.theta0 < 1.0 {
        errors.at(
            "analysis.sequential.theta0",
            format!("{} is below 1", sequential.theta0),
        );
    }
    if sequential.delta <= 1.0 {
        errors.at(
            "analysis.sequential.delta",
            format!("{} must be above 1", sequential.delta),
        );
    }
    sequential
}

/// The metrics: 1 to 16, names unique, each planned by its kind; the failure limit.
fn planned_metrics(spec: &RolloutSpec, errors: &mut Problems) -> Vec<MetricPlan> {
    let declared = &spec.analysis.metrics;
    if declared.is_empty() {
        errors.at(
            "analysis.metrics",
            "at least one metric is needed; weir never promotes without evidence",
        );
    }
    if declared.len() > 16 {
        errors.at(
            "analysis.metrics",
            format!("{} metrics, at most 16 are allowed", declared.len()),
        );
    }
    if let Some(limit) = spec.analysis.failure_limit.filter(|l| *l > 100) {
        errors.at("analysis.failureLimit", format!("{limit} is above 100"));
    }
    let mut metrics = Vec::new();
    for (i, metric) in declared.iter().enumerate() {
        if declared.iter().take(i).any(|m| m.name == metric.name) {
            errors.at(
                format!("{}.name", metric_field(i)),
                format!("{} appears twice", metric.name),
            );
        }
        if let Some(m) = metric_plan(i, metric, errors) {
            metrics.push(m);
        }
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Problems as `field: problem` lines, the paths relative to `spec`.
    fn shown(errors: &Problems) -> Vec<String> {
        errors.iter().map(|e| format!("{}: {}", e.field, e.problem)).collect()
    }

    #[test]
    fn durations_read_as_the_api_server_writes_them() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn durations_read_as_the_api_servers_cel_reads_them() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("1.5h"), Ok(5400.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("500ms"), Ok(0.5));
        assert_eq!(secs(".5s"), Ok(0.5));
        assert_eq!(secs("2m0.5s"), Ok(120.5));
        assert_eq!(secs("1500us"), Ok(0.0015));
        for refused in ["", "10", "1 hour", "-1m", "1d", "1.2.3s", "s", "0s", "+5s", "5S"] {
            assert!(parse_duration(refused).is_err(), "{refused:?} accepted");
        }
    }

    fn latency_metric(max: Bound) -> Metric {
        Metric {
            name: REQUEST_DURATION.into(),
            template_ref: None,
            template_variables: Default::default(),
            query: None,
            min: None,
            max: Some(max),
            quantile: None,
        }
    }

    #[test]
    fn a_latency_bound_is_milliseconds_or_a_duration() {
        for bound in [
            Bound::Number(500.0),
            Bound::Duration("500ms".into()),
            Bound::Duration("0.5s".into()),
        ] {
            let plan = metric_plan(0, &latency_metric(bound.clone()), &mut Problems::default());
            assert_eq!(
                plan.map(|p| p.kind),
                Some(MetricKind::Duration {
                    quantile: 0.99,
                    max_ms: 500.0
                }),
                "{bound:?}"
            );
        }
        let mut errors = Problems::default();
        assert!(metric_plan(1, &latency_metric(Bound::Duration("1.5s".into())), &mut errors).is_some());
        assert!(
            shown(&errors)[0].starts_with("analysis.metrics[1].max: 1500ms is not a bucket bound"),
            "{errors:?}"
        );
        let mut errors = Problems::default();
        assert!(metric_plan(2, &latency_metric(Bound::Duration("fast".into())), &mut errors).is_none());
        assert_eq!(
            shown(&errors),
            [
                "analysis.metrics[2].max: \"fast\" is not a duration such as 30s, 1m30s, 1.5h or 500ms, or a number of milliseconds"
            ]
        );
    }

    #[test]
    fn canary_replicas_are_the_step_share_of_stable_at_least_one() {
        assert_eq!(Plan::canary_replicas(4, 10), 1);
        assert_eq!(Plan::canary_replicas(4, 25), 1);
        assert_eq!(Plan::canary_replicas(4, 50), 2);
        assert_eq!(Plan::canary_replicas(20, 25), 5);
        assert_eq!(Plan::canary_replicas(3, 100), 3);
        assert_eq!(Plan::canary_replicas(0, 10), 1);
    }

    #[test]
    fn template_variables_are_the_only_thing_substituted() {
        let metric = Metric {
            name: "m".into(),
            template_ref: None,
            template_variables: Default::default(),
            query: Some(r#"up{job="{{ namespace }}"} + on() {{canary}}"#.into()),
            min: None,
            max: Some(1.0.into()),
            quantile: None,
        };
        let mut errors = Problems::default();
        check_template("m", metric.query.as_deref().unwrap_or_default(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        check_template("m", "up{{{x}}", &mut errors);
        assert!(
            errors.iter().any(|e| e.problem.contains("unknown template variable")),
            "{errors:?}"
        );
    }
}
