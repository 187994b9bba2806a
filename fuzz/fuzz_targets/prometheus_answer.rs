//! Any bytes as Prometheus's answer to a query: parsed, then read as each kind of metric. A hostile endpoint must not make weir panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::edges::prometheus::{QueryScope, parse_answer, reading_from};
use weir_core::plan::{MetricKind, MetricPlan};

fuzz_target!(|data: &[u8]| {
    let Ok(samples) = parse_answer(200, data) else {
        return;
    };
    let scope = QueryScope {
        namespace: "dev".into(),
        canary: "backend-canary".into(),
        stable: "backend".into(),
    };
    for kind in [
        MetricKind::SuccessRate { min: 99.0 },
        MetricKind::Duration { quantile: 0.99, max_ms: 500.0 },
        MetricKind::Custom { query: weir_core::plan::Query::Admitted("q".into()), min: Some(0.0), max: Some(1.0) },
    ] {
        let metric = MetricPlan { name: "m".into(), kind };
        let _ = reading_from(&metric, &scope, &samples);
    }
});
