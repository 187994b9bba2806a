//! The controller's HTTP endpoints and what they answer: `/metrics` (Prometheus text),
//! `/healthz` (reconciles still end), `/readyz` (the watches synced; a standby is ready).

use super::*;

/// What `/readyz` and `/healthz` answer.
#[derive(Default)]
pub struct Health {
    /// The Rollout watch has listed every Rollout once: decisions see the whole cluster.
    synced: AtomicBool,
    /// Reconciles started and not yet ended.
    in_flight: AtomicU64,
    /// When a reconcile last ended.
    last_end: Mutex<Option<Instant>>,
    /// With leader election: 1 while a standby, 2 once leading; 0 without.
    role: AtomicU8,
    /// Rollouts whose last reconciles failed (panicked, or a deletion could not read),
    /// and how many times in a row.
    failures: Mutex<HashMap<String, u32>>,
}

/// The first retry after a failure; it doubles with each failure in a row, up to `PANIC_RETRY_MAX`.
const PANIC_RETRY: Duration = Duration::from_secs(1);
const PANIC_RETRY_MAX: Duration = Duration::from_secs(300);

pub(super) const STANDBY: u8 = 1;
pub(super) const LEADER: u8 = 2;

/// Longer than any reconcile can take (its looks are bounded by the providers' timeouts):
/// reconciles in flight and none ended for this long means the loop is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(300);

impl Health {
    /// The Rollout watch listed every Rollout once; `true` the first time only.
    pub(super) fn mark_synced(&self) -> bool {
        !self.synced.swap(true, Ordering::Relaxed)
    }

    pub(super) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        *self.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Ready once the watches have synced; a standby is ready as it is (it serves its
    /// probes and waits for the Lease). The answer says which.
    pub fn ready(&self) -> Result<&'static str, String> {
        match (self.role.load(Ordering::Relaxed), self.synced.load(Ordering::Relaxed)) {
            (STANDBY, _) => Ok("standby: another replica holds the Lease"),
            (_, false) => Err("the Rollout watch has not synced yet".into()),
            (LEADER, true) => Ok("leader"),
            (_, true) => Ok("ok"),
        }
    }

    /// Counts a failure of `key`'s reconcile in a row (a panic, a deletion that could not
    /// read); returns when to try it again.
    pub(super) fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        PANIC_RETRY
            .saturating_mul(1 << (*count - 1).min(16))
            .min(PANIC_RETRY_MAX)
    }

    pub(super) fn recovered(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !failures.is_empty() {
            failures.remove(key);
        }
    }

    pub(super) fn set_role(&self, role: u8) {
        self.role.store(role, Ordering::Relaxed);
    }

    /// Healthy unless reconciles are in flight and none has ended for `STUCK_AFTER`.
    pub fn live(&self) -> Result<(), String> {
        let last = *self.last_end.lock().unwrap_or_else(|e| e.into_inner());
        let busy = self.in_flight.load(Ordering::Relaxed) > 0;
        match last {
            Some(t) if busy && t.elapsed() > STUCK_AFTER => Err(format!(
                "no reconcile has ended for {}s while some are running",
                t.elapsed().as_secs()
            )),
            _ => Ok(()),
        }
    }
}

/// Serves `/healthz` and `/readyz` on `addr`, and `/metrics` on `metrics_addr` when
/// given (else on `addr` too). Apart, the probes' port can stay open to the kubelet while
/// the metrics port (every tenant's Rollout names and phases) is reachable only from the
/// monitoring namespace (`config/base/30-network-policy.yaml`).
pub(super) async fn serve_http(
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    ctx: Arc<Context>,
) -> Result<(), Error> {
    use axum::routing::get;
    let answer = |state: Result<&str, String>| match state {
        Ok(what) => (axum::http::StatusCode::OK, what.to_string()),
        Err(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, why),
    };
    let (live, ready) = (ctx.clone(), ctx.clone());
    let probes = axum::Router::new()
        .route(
            "/healthz",
            get(move || async move { answer(live.health.live().map(|()| "ok")) }),
        )
        .route("/readyz", get(move || async move { answer(ready.health.ready()) }));
    let metrics = axum::Router::new().route(
        "/metrics",
        get(move || {
            let ctx = ctx.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &ctx.telemetry.registry) {
                    Ok(()) => body,
                    Err(_) => String::from("# encoding failed\n"),
                }
            }
        }),
    );
    match metrics_addr {
        None => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            info!(%addr, "serving /metrics, /healthz, /readyz");
            axum::serve(listener, probes.merge(metrics)).await?;
        }
        Some(metrics_addr) => {
            let (probe_listener, metrics_listener) = (
                tokio::net::TcpListener::bind(addr).await?,
                tokio::net::TcpListener::bind(metrics_addr).await?,
            );
            info!(%addr, %metrics_addr, "serving /healthz, /readyz; /metrics apart");
            tokio::try_join!(async { axum::serve(probe_listener, probes).await }, async {
                axum::serve(metrics_listener, metrics).await
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_synced_and_unhealthy_only_when_reconciles_stop_ending() {
        let health = Health::default();
        assert!(health.ready().is_err(), "not ready before the watch synced");
        health.set_role(STANDBY);
        assert_eq!(health.ready(), Ok("standby: another replica holds the Lease"));
        health.set_role(LEADER);
        assert!(health.ready().is_err(), "a new leader is ready once its watch synced");
        health.synced.store(true, Ordering::Relaxed);
        assert_eq!(health.ready(), Ok("leader"));
        assert!(health.live().is_ok(), "idle is healthy");
        health.started();
        health.ended();
        health.started();
        assert!(health.live().is_ok(), "a reconcile in flight, one ended just now");
        let long_ago = Instant::now().checked_sub(STUCK_AFTER + Duration::from_secs(1));
        *health.last_end.lock().unwrap() = long_ago;
        assert!(
            health
                .live()
                .unwrap_err()
                .starts_with("no reconcile has ended for 301s")
        );
        health.ended();
        assert!(health.live().is_ok());
    }
}
