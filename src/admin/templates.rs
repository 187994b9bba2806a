//! Metric templates and the rule for tenant-written PromQL: PromQL belongs to the
//! cluster admin. Beyond the built-in metrics a Rollout names a
//! metric template the admin declared (in the providers file) and passes values for its
//! typed parameters; each value is checked and escaped by its type, so it cannot change
//! the query's structure. PromQL written in a Rollout is refused unless the admin allows
//! it for the namespace (`tenantQueries`), and then it is confined:
//!
//! ```yaml
//! templates:
//!   - name: jobs-failed-rate
//!     provider: prometheus          # optional: only Rollouts reading this provider
//!     namespaces: [batch-*]         # optional: who may use it (see `Scope`)
//!     query: 'sum(rate(jobs_failed_total{namespace="{{namespace}}",workload="{{canary}}",queue={{queue}}}[{{interval}}])) or vector(0)'
//!     parameters:
//!       queue: {type: string, default: default}   # string | number | duration | name
//! tenantQueries:                    # PromQL in Rollouts (metrics[].query): refused unless
//!   namespaces: [team-a]            # the namespace is listed here
//!   maxLength: 1000                 # default 1000, at most 4000 bytes
//!   metrics: [http_*, jobs_failed_total]   # metric names it may select; default: any
//!   namespaceLabels: [namespace]    # every selector pins one to the Rollout's namespace
//! ```
//!
//! Why a pinned namespace matcher rather than rewriting the query: the query sent is the
//! one the author wrote and `weir validate` showed, and a selector without the pin is a
//! precise error (which selector, which labels) instead of a silent change of meaning.
//! Every vector selector, also inside functions, subqueries and `or` groups, must carry
//! `<label>="<its own namespace>"` for one of `namespaceLabels`; so whatever the query
//! computes, it reads only series of the tenant's namespace. The metric-name list keeps
//! it to the series the admin meant (Istio's, the application's), not
//! `kube_secret_info`.

use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};
use serde::Deserialize;
use weir_core::plan::{Query, TEMPLATE_VARIABLES, parse_duration};

use super::scope::Scope;
use crate::Error;

/// The longest tenant-written query the admin may allow.
pub const MAX_TENANT_QUERY: usize = 4000;
const DEFAULT_TENANT_QUERY: usize = 1000;

/// The type of a template parameter: what a value must look like, and how it is written
/// into the query.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any text; written as a complete PromQL string literal, quotes included
    /// (`label={{p}}`, `label=~{{p}}`).
    String,
    /// A finite number.
    Number,
    /// A duration (`30s`, `5m`); written in milliseconds (`300000ms`).
    Duration,
    /// A metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), written as is.
    Name,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Param {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub default: Option<String>,
}

/// One template, as the admin declared it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Template {
    pub name: String,
    #[serde(default)]
    pub provider: Option<String>,
    pub query: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, Param>,
    #[serde(default)]
    pub namespaces: Scope,
}

/// Where the admin lets tenants write PromQL, and how it is confined.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantQueries {
    #[serde(default = "Scope::nowhere")]
    pub namespaces: Scope,
    #[serde(default = "default_length")]
    pub max_length: usize,
    #[serde(default)]
    pub metrics: Vec<String>,
    #[serde(default = "default_labels")]
    pub namespace_labels: Vec<String>,
}

fn default_length() -> usize {
    DEFAULT_TENANT_QUERY
}

fn default_labels() -> Vec<String> {
    vec!["namespace".into()]
}

impl Default for TenantQueries {
    fn default() -> Self {
        TenantQueries {
            namespaces: Scope::nowhere(),
            max_length: DEFAULT_TENANT_QUERY,
            metrics: Vec::new(),
            namespace_labels: default_labels(),
        }
    }
}

/// Every template, and the rule for tenant-written PromQL.
#[derive(Clone, Debug, Default)]
pub struct Templates {
    by_name: BTreeMap<String, Template>,
    tenant: TenantQueries,
}

/// What went wrong with a metric's query: the sub-field (`templateRef`,
/// `templateVariables.x`, `query`) and the problem.
pub type Refusal = (String, String);

impl Templates {
    /// Checks the admin's templates and rule; refuses the file naming the entry.
    pub fn new(templates: Vec<Template>, tenant: TenantQueries) -> Result<Templates, Error> {
        let mut by_name = BTreeMap::new();
        for (i, t) in templates.into_iter().enumerate() {
            let at = format!("providers file: templates[{i}]");
            check_template(&t).map_err(|(field, e)| Error::Usage(format!("{at}.{field}: {e}")))?;
            t.namespaces.check(&at)?;
            if by_name.contains_key(&t.name) {
                return Err(Error::Usage(format!("{at}.name: {:?} is declared twice", t.name)));
            }
            by_name.insert(t.name.clone(), t);
        }
        tenant.namespaces.check("providers file: tenantQueries")?;
        if tenant.max_length == 0 || tenant.max_length > MAX_TENANT_QUERY {
            return Err(Error::Usage(format!(
                "providers file: tenantQueries.maxLength: {} is not in 1..={MAX_TENANT_QUERY}",
                tenant.max_length
            )));
        }
        if tenant.namespace_labels.is_empty() || !tenant.namespace_labels.iter().all(|l| is_promql_name(l)) {
            return Err(Error::Usage(
                "providers file: tenantQueries.namespaceLabels: expected one or more label names".into(),
            ));
        }
        Ok(Templates { by_name, tenant })
    }

    /// The providers the templates name (checked against the declared ones).
    pub fn providers_named(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_name
            .values()
            .filter_map(|t| t.provider.as_deref().map(|p| (t.name.as_str(), p)))
    }

    /// A metric's query as admitted for a Rollout of `namespace` reading `provider`.
    pub fn admit(&self, namespace: &str, provider: &str, query: &Query) -> Result<String, Refusal> {
        match query {
            Query::Admitted(q) => Ok(q.clone()),
            Query::Inline(q) => self.confine(namespace, q).map(|()| q.clone()),
            Query::Template { name, variables } => self.render(namespace, provider, name, variables),
        }
    }

    /// The template a Rollout of `namespace` reading `provider` may use by `name`.
    fn template_for(&self, namespace: &str, provider: &str, name: &str) -> Result<&Template, Refusal> {
        let refuse = |problem: String| Err(("templateRef.name".to_string(), problem));
        let Some(t) = self.by_name.get(name) else {
            let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            return refuse(format!(
                "{name:?} is not a metric template the cluster admin declared (declared: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        };
        if !t.namespaces.allows(namespace) {
            return refuse(format!(
                "template {name:?} is not for namespace {namespace} (the cluster admin declared it for {})",
                t.namespaces.describe()
            ));
        }
        if let Some(p) = t.provider.as_deref().filter(|p| *p != provider) {
            return refuse(format!(
                "template {name:?} reads provider {p:?}; this Rollout's analysis.provider is {provider:?}"
            ));
        }
        Ok(t)
    }

    fn render(
        &self,
        namespace: &str,
        provider: &str,
        name: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<String, Refusal> {
        let refuse = |field: &str, problem: String| Err((field.to_string(), problem));
        let t = self.template_for(namespace, provider, name)?;
        if let Some(unknown) = variables.keys().find(|k| !t.parameters.contains_key(*k)) {
            let known: Vec<&str> = t.parameters.keys().map(String::as_str).collect();
            return refuse(
                &format!("templateVariables.{unknown}"),
                format!(
                    "template {name:?} has no parameter {unknown:?} (its parameters: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        let mut values = BTreeMap::new();
        for (param, spec) in &t.parameters {
            let Some(value) = variables.get(param).or(spec.default.as_ref()) else {
                return refuse(
                    &format!("templateVariables.{param}"),
                    format!("template {name:?} needs it ({:?})", spec.kind),
                );
            };
            let written = write_value(spec.kind, value).map_err(|e| (format!("templateVariables.{param}"), e))?;
            values.insert(param.as_str(), written);
        }
        Ok(substitute(&t.query, &values))
    }

    /// Tenant-written PromQL, as the admin's `tenantQueries` allows it for `namespace`.
    fn confine(&self, namespace: &str, query: &str) -> Result<(), Refusal> {
        let refuse = |problem: String| Err(("query".to_string(), problem));
        let rule = &self.tenant;
        if !rule.namespaces.allows(namespace) {
            return refuse(format!(
                "the cluster admin does not allow PromQL written in Rollouts of namespace {namespace}; name a templateRef (the admin's metric templates)"
            ));
        }
        if query.len() > rule.max_length {
            return refuse(format!(
                "is {} bytes; the cluster admin allows at most {}",
                query.len(),
                rule.max_length
            ));
        }
        let sample = sample_query(query, namespace);
        let expr = parse(&sample).map_err(|e| ("query".to_string(), e))?;
        let mut selectors = Vec::new();
        collect_selectors(&expr, &mut selectors);
        for vs in selectors {
            self.check_selector(namespace, vs)
                .map_err(|e| ("query".to_string(), e))?;
        }
        Ok(())
    }

    fn check_selector(&self, namespace: &str, vs: &VectorSelector) -> Result<(), String> {
        let rule = &self.tenant;
        let pinned = |group: &[Matcher]| {
            group.iter().any(|m| {
                matches!(m.op, MatchOp::Equal) && m.value == namespace && rule.namespace_labels.contains(&m.name)
            })
        };
        let or = &vs.matchers.or_matchers;
        if !(pinned(&vs.matchers.matchers) || (!or.is_empty() && or.iter().all(|g| pinned(g)))) {
            return Err(format!(
                "selector {vs} does not pin the namespace: add {}=\"{{{{namespace}}}}\"",
                rule.namespace_labels.join("=\"{{namespace}}\" or ")
            ));
        }
        if rule.metrics.is_empty() {
            return Ok(());
        }
        let name = vs.name.clone().or_else(|| {
            vs.matchers
                .matchers
                .iter()
                .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                .map(|m| m.value.clone())
        });
        let allowed = name.as_deref().is_some_and(|n| {
            rule.metrics
                .iter()
                .any(|p| p.strip_suffix('*').map_or(p == n, |prefix| n.starts_with(prefix)))
        });
        match allowed {
            true => Ok(()),
            false => Err(format!(
                "selector {vs} reads a metric the cluster admin did not list (allowed: {})",
                rule.metrics.join(", ")
            )),
        }
    }
}

/// PromQL parsed, or why not. A parser of another project meets tenant text here: a
/// panic in it is caught and read as a refusal, so no query can stop a reconcile.
fn parse(query: &str) -> Result<Expr, String> {
    match std::panic::catch_unwind(|| parser::parse(query)) {
        Ok(Ok(expr)) => Ok(expr),
        Ok(Err(e)) => Err(format!("is not PromQL: {e}")),
        Err(_) => Err("is not PromQL the parser can read".into()),
    }
}

/// Every vector selector of an expression, in and under any node.
fn collect_selectors<'a>(expr: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match expr {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Aggregate(a) => {
            collect_selectors(&a.expr, out);
            if let Some(p) = &a.param {
                collect_selectors(p, out);
            }
        }
        Expr::Unary(u) => collect_selectors(&u.expr, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, out);
            collect_selectors(&b.rhs, out);
        }
        Expr::Paren(p) => collect_selectors(&p.expr, out),
        Expr::Subquery(s) => collect_selectors(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect_selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The query with weir's own variables as they will be: the namespace itself, a name
/// for the workloads, a window for `{{interval}}`.
fn sample_query(query: &str, namespace: &str) -> String {
    let mut values = BTreeMap::new();
    values.insert("namespace", namespace.to_string());
    for name in ["target", "canary", "stable"] {
        values.insert(name, "workload".to_string());
    }
    values.insert("interval", "60s".to_string());
    let mut out = substitute(query, &values);
    // Placeholders of weir's own that `values` did not hold stay `{{x}}`: not PromQL.
    out = out.replace("{{", "{").replace("}}", "}");
    out
}

/// Replaces `{{ name }}` by `values[name]`; other variables stay as written.
fn substitute(query: &str, values: &BTreeMap<&str, String>) -> String {
    weir_core::plan::substitute(query, |name| values.get(name).cloned())
}

fn is_promql_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A parameter's value as written into the query, or what was expected.
pub fn write_value(kind: ParamType, value: &str) -> Result<String, String> {
    match kind {
        ParamType::String => {
            if value.chars().any(|c| c.is_control()) {
                return Err("expected text without control characters".into());
            }
            Ok(format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")))
        }
        ParamType::Number => match value.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(format!("{n}")),
            _ => Err(format!("{value:?} is not a number")),
        },
        ParamType::Duration => parse_duration(value)
            .map(|d: Duration| format!("{}ms", d.as_millis().max(1)))
            .map_err(|e| e.to_string()),
        ParamType::Name => match is_promql_name(value) {
            true => Ok(value.to_string()),
            false => Err(format!(
                "{value:?} is not a metric or label name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
            )),
        },
    }
}

/// The admin's template, checked: names, parameters, defaults, and PromQL that parses
/// with sample values.
fn check_template(t: &Template) -> Result<(), Refusal> {
    let wrong = |field: &str, e: String| Err((field.to_string(), e));
    if !crate::plan::is_object_name(&t.name) || t.name.contains('.') {
        return wrong(
            "name",
            format!("{:?} is not a name (lowercase letters, digits, '-')", t.name),
        );
    }
    let mut samples = BTreeMap::new();
    for (name, param) in &t.parameters {
        let at = format!("parameters.{name}");
        if !is_promql_name(name) || name.contains(':') || TEMPLATE_VARIABLES.contains(&name.as_str()) {
            return wrong(
                &at,
                format!(
                    "{name:?} is not a parameter name, or is one of weir's own ({})",
                    TEMPLATE_VARIABLES.join(", ")
                ),
            );
        }
        if let Some(d) = &param.default {
            write_value(param.kind, d).map_err(|e| (format!("{at}.default"), e))?;
        }
        let sample = match param.kind {
            ParamType::String => "\"x\"",
            ParamType::Number => "1",
            ParamType::Duration => "60000ms",
            ParamType::Name => "x",
        };
        samples.insert(name.as_str(), sample.to_string());
    }
    let mut rest = t.query.as_str();
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return wrong("query", "unclosed '{{'".into());
        };
        let var = after[..close].trim();
        if !TEMPLATE_VARIABLES.contains(&var) && !t.parameters.contains_key(var) {
            return wrong(
                "query",
                format!("{{{{{var}}}}} is neither a parameter nor one of weir's variables"),
            );
        }
        rest = &after[close + 2..];
    }
    let sample = sample_query(&substitute(&t.query, &samples), "sample");
    parse(&sample).map_err(|e| ("query".to_string(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(yaml: &str) -> Templates {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct F {
            #[serde(default)]
            templates: Vec<Template>,
            #[serde(default)]
            tenant_queries: TenantQueries,
        }
        let f: F = crate::yaml::from_str(yaml).unwrap();
        Templates::new(f.templates, f.tenant_queries).unwrap()
    }

    #[test]
    fn a_value_is_written_by_its_type_and_cannot_change_the_query() {
        assert_eq!(
            write_value(ParamType::String, r#"a"}) or up{x=""#).unwrap(),
            r#""a\"}) or up{x=\"""#
        );
        assert_eq!(write_value(ParamType::String, r"\").unwrap(), r#""\\""#);
        assert!(write_value(ParamType::String, "a\nb").is_err());
        assert!(write_value(ParamType::Number, "1) or up").is_err());
        assert!(write_value(ParamType::Number, "NaN").is_err());
        assert_eq!(write_value(ParamType::Duration, "5m").unwrap(), "300000ms");
        assert!(write_value(ParamType::Name, "up{}").is_err());
    }

    #[test]
    fn a_template_renders_its_parameters_and_leaves_weirs_variables() {
        let t = templates(
            "templates:\n- name: failed\n  query: 'sum(rate(jobs_failed_total{namespace=\"{{namespace}}\",queue={{queue}}}[{{window}}]))'\n  parameters:\n    queue: {type: string, default: main}\n    window: {type: duration}\n",
        );
        let q = Query::Template {
            name: "failed".into(),
            variables: BTreeMap::from([("window".into(), "2m".into())]),
        };
        assert_eq!(
            t.admit("apps", "prometheus", &q).unwrap(),
            r#"sum(rate(jobs_failed_total{namespace="{{namespace}}",queue="main"}[120000ms]))"#
        );
        let missing = Query::Template {
            name: "failed".into(),
            variables: BTreeMap::new(),
        };
        assert_eq!(
            t.admit("apps", "prometheus", &missing).unwrap_err().0,
            "templateVariables.window"
        );
    }

    #[test]
    fn tenant_promql_is_refused_unless_allowed_and_then_pinned_to_its_namespace() {
        let none = templates("{}");
        let secrets = Query::Inline(r#"count(kube_secret_info{namespace="kube-system"})"#.into());
        let (field, why) = none.admit("apps", "p", &secrets).unwrap_err();
        assert!(
            field == "query" && why.contains("does not allow PromQL written in Rollouts"),
            "{why}"
        );
        let t = templates("tenantQueries: {namespaces: [apps], metrics: [http_*]}");
        let (_, why) = t.admit("apps", "p", &secrets).unwrap_err();
        assert!(why.contains("does not pin the namespace"), "{why}");
        let ok = Query::Inline(r#"sum(rate(http_errors{namespace="{{namespace}}"}[{{interval}}])) / sum(rate(http_total{namespace="{{namespace}}"}[1m]))"#.into());
        assert!(t.admit("apps", "p", &ok).is_ok());
        for sneaky in [
            r#"sum(http_errors{namespace="{{namespace}}"}) + count(kube_secret_info{namespace="{{namespace}}"})"#,
            r#"http_errors{namespace="{{namespace}}"} or on() http_errors{namespace="other"}"#,
            r#"http_errors{namespace=~"{{namespace}}|kube-system"}"#,
            r#"{__name__=~".+",namespace="{{namespace}}"}"#,
            r#"max_over_time(http_errors{namespace!="{{namespace}}"}[5m:1m])"#,
        ] {
            assert!(t.admit("apps", "p", &Query::Inline(sneaky.into())).is_err(), "{sneaky}");
        }
        let long = Query::Inline(format!(
            r#"http_errors{{namespace="{{{{namespace}}}}",x="{}"}}"#,
            "a".repeat(1000)
        ));
        assert!(t.admit("apps", "p", &long).unwrap_err().1.contains("at most 1000"));
        assert!(t.admit("other", "p", &ok).is_err());
    }

    /// The deepest query the admin can allow, on a test thread's 2 MiB stack.
    #[test]
    fn a_deeply_nested_query_is_read_without_exhausting_the_stack() {
        let t = templates("tenantQueries: {namespaces: [apps], maxLength: 4000}");
        let depth = 1980;
        let q = format!(
            "{}http_errors{{namespace=\"apps\"}}{}",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        let read = t.admit("apps", "p", &Query::Inline(q));
        assert!(read.is_ok(), "{read:?}");
        let q = format!("{}1{}", "-(".repeat(1300), ")".repeat(1300));
        let _ = t.admit("apps", "p", &Query::Inline(q));
    }
}
