//! Small helpers the scenarios share: reading Rollouts and Deployments, waiting for a
//! phase or a weight, bumping an image, checks that collect failures instead of panicking.

use super::*;

pub(crate) fn vs_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "VirtualService",
    ));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Records every canary weight the VirtualService (or HTTPRoute) shows, as it changes.
pub(crate) fn record_weights(
    client: Client,
    ns: &str,
    layout: Layout,
) -> (Arc<Mutex<Vec<u64>>>, tokio::task::JoinHandle<()>) {
    let weights = Arc::new(Mutex::new(vec![]));
    let (ar, pointer) = layout.weight_at();
    let (w, api) = (weights.clone(), Api::<DynamicObject>::namespaced_with(client, ns, &ar));
    let task = tokio::spawn(async move {
        loop {
            if let Ok(vs) = api.get("backend").await {
                let weight = vs.data.pointer(pointer).and_then(|v| v.as_u64()).unwrap_or(0);
                let mut w = w.lock().unwrap();
                if w.last() != Some(&weight) {
                    w.push(weight);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (weights, task)
}

pub(crate) async fn rollout(client: &Client, ns: &str) -> Rollout {
    Api::<Rollout>::namespaced(client.clone(), ns)
        .get("backend")
        .await
        .expect("get rollout")
}

pub(crate) async fn wait_phase(client: &Client, ns: &str, want: &[Phase], limit: Duration) -> Result<Rollout, String> {
    let start = Instant::now();
    loop {
        let r = rollout(client, ns).await;
        let phase = r.status.as_ref().map(|s| s.phase.clone());
        if phase.as_ref().is_some_and(|p| want.contains(p)) {
            return Ok(r);
        }
        if start.elapsed() > limit {
            return Err(format!("{ns}: not {want:?} within {limit:?}; status {:#?}", r.status));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most 2 min) for the release to end, and checks it was promoted.
pub(crate) async fn expect_promoted(env: &Env, f: &Failures, ns: &str, when: &str) -> Result<(), String> {
    let ended = [Phase::Succeeded, Phase::RolledBack];
    let r = wait_phase(&env.client, ns, &ended, Duration::from_secs(120)).await?;
    check(
        f,
        r.status.as_ref().is_some_and(|s| s.phase == Phase::Succeeded),
        format!("{ns}: not promoted {when}"),
    );
    Ok(())
}

pub(crate) async fn wait_weight(weights: &Arc<Mutex<Vec<u64>>>, weight: u64, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while weights.lock().unwrap().last() != Some(&weight) {
        if start.elapsed() > limit {
            return Err(format!(
                "weight {weight} not reached within {limit:?}: {:?}",
                weights.lock().unwrap()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub(crate) async fn bump(client: &Client, ns: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "backend", "image": image}]}}}});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch("backend", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("bump the image");
}

pub(crate) async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get deployment")
}

pub(crate) fn image_of(d: &Deployment) -> String {
    d.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

/// Applies the application and waits until weir has taken it over. Requests that met
/// no ready pod before that (the VirtualService can land before the first pods are
/// ready) are weir's business only from here on: the count is returned as the baseline.
pub(crate) async fn setup(env: &Env, ns: &str, provider: &str) -> Result<(Arc<Mutex<Vec<u64>>>, u64), String> {
    setup_on(env, ns, provider, Layout::Istio).await
}

/// `setup` for a layout.
pub(crate) async fn setup_on(
    env: &Env,
    ns: &str,
    provider: &str,
    layout: Layout,
) -> Result<(Arc<Mutex<Vec<u64>>>, u64), String> {
    devcluster::apply_yaml(&env.client, &layout.app(ns, provider))
        .await
        .map_err(|e| format!("{ns}: apply: {e}"))?;
    wait_phase(&env.client, ns, &[Phase::Healthy], Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let no_ready_before = env.mesh.lock().unwrap().no_ready_pods(ns);
    let (weights, _task) = record_weights(env.client.clone(), ns, layout);
    Ok((weights, no_ready_before))
}

/// Since `before` (the mesh simulator's count when the scenario began), no request of
/// `ns` met a destination without ready pods.
pub(crate) fn check_no_request_met_no_pods(env: &Env, f: &Failures, ns: &str, before: u64) {
    let no_ready = env.mesh.lock().unwrap().no_ready_pods(ns) - before;
    check(
        f,
        no_ready == 0,
        format!("{ns}: {no_ready} requests met a destination without ready pods"),
    );
}

pub(crate) fn check(failures: &Failures, ok: bool, what: String) {
    if !ok {
        failures.lock().unwrap().push(what);
    }
}

/// Waits (at most `limit`) until the `inbox` receiver was told `kind` about `ns`.
pub(crate) async fn wait_told(gates: &Gates, ns: &str, kind: &str, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !gates.notifications(ns).iter().any(|k| k == kind) {
        if start.elapsed() > limit {
            let told = gates.notifications(ns);
            return Err(format!("{ns}: {kind} not told within {limit:?}; told {told:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sends the Rollout's notifications to the `inbox` receiver the admin declared.
pub(crate) async fn notify_inbox(env: &Env, ns: &str) -> Result<(), String> {
    patch_spec(&env.client, ns, json!({"spec": {"notify": ["inbox"]}}), "notify").await
}

/// Merges `patch` into the Rollout `backend` and waits until weir has observed it: a
/// bump right after the patch could otherwise be decided on the spec before it (the
/// Deployment and Rollout watches are apart).
pub(crate) async fn patch_spec(client: &Client, ns: &str, patch: serde_json::Value, what: &str) -> Result<(), String> {
    let patched = Api::<Rollout>::namespaced(client.clone(), ns)
        .patch("backend", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|e| format!("{ns}: {what}: {e}"))?;
    let generation = patched.metadata.generation.unwrap_or(0);
    let start = Instant::now();
    loop {
        let seen = rollout(client, ns).await.status.and_then(|s| s.observed_generation);
        if seen >= Some(generation) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{ns}: {what}: weir did not observe generation {generation} within 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The answer status records for a webhook.
pub(crate) async fn webhook_answer(client: &Client, ns: &str, name: &str) -> Option<String> {
    let status = rollout(client, ns).await.status?;
    status
        .webhooks
        .iter()
        .find(|w| w.name == name)
        .map(|w| w.answer.clone())
}

/// A small deterministic generator (xorshift), so the chaos is the same in every run.
pub(crate) struct Chaos(pub(crate) u64);

impl Chaos {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The phase of a Rollout, reading through API server restarts.
pub(crate) async fn phase_of(client: &Client, ns: &str) -> Option<Phase> {
    let r = Api::<Rollout>::namespaced(client.clone(), ns)
        .get("backend")
        .await
        .ok()?;
    r.status.map(|s| s.phase)
}

/// An address on loopback that accepts connections and never answers (a provider or
/// webhook that hangs); abort the task to close it.
pub(crate) async fn silent_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, holder)
}

/// From the image bump to Succeeded, for a healthy release in `ns` on provider `main`.
pub(crate) async fn promotion_time(env: &Env, ns: &str) -> Result<Duration, String> {
    setup(env, ns, &env.provider).await?;
    let times = promotion_times(env, &[ns.to_string()], "nginxdemos/hello:2.0").await?;
    times.first().copied().ok_or_else(|| format!("{ns}: no time"))
}

/// Healthy releases in `namespaces` at once, each bumped to `image`: how long each took
/// from its bump to Succeeded.
pub(crate) async fn promotion_times(env: &Env, namespaces: &[String], image: &str) -> Result<Vec<Duration>, String> {
    let runs = namespaces.iter().map(|ns| async move {
        let bumped = Instant::now();
        bump(&env.client, ns, image).await;
        // A Rollout promoted before still says Succeeded until weir sees the bump.
        wait_phase(&env.client, ns, &[Phase::Progressing], Duration::from_secs(60)).await?;
        let r = wait_phase(
            &env.client,
            ns,
            &[Phase::Succeeded, Phase::RolledBack],
            Duration::from_secs(240),
        )
        .await?;
        match r.status.map(|s| s.phase) {
            Some(Phase::Succeeded) => Ok(bumped.elapsed()),
            other => Err(format!("{ns}: ended {other:?}")),
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// weir's resident and peak memory (VmRSS, VmHWM), in MiB.
pub(crate) fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sets the verbs of weir's ClusterRole rule for `resource`; returns the verbs before.
pub(crate) async fn set_weir_verbs(client: &Client, resource: &str, verbs: &[&str]) -> Result<Vec<String>, String> {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let api: Api<ClusterRole> = Api::all(client.clone());
    let mut role = api.get("weir").await.map_err(|e| format!("ClusterRole weir: {e}"))?;
    let mut before = vec![];
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == resource) {
            before = std::mem::replace(&mut rule.verbs, verbs.iter().map(|v| v.to_string()).collect());
        }
    }
    api.replace("weir", &Default::default(), &role)
        .await
        .map_err(|e| format!("ClusterRole weir: {e}"))?;
    Ok(before)
}

/// What weir answers on one of its HTTP paths (empty when it does not answer).
pub(crate) async fn http_text(port: &str, path: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Who holds weir's Lease.
pub(crate) async fn lease_holder(client: &Client) -> Option<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let lease = Api::<Lease>::namespaced(client.clone(), "weir-system")
        .get_opt("weir-leader")
        .await
        .ok()??;
    lease.spec?.holder_identity
}

/// Two replicas with `--leader-elect`: the first leads, the second waits (its /readyz
/// says standby, its weir_leader is 0). The leader is SIGKILLed at 25 %; the standby
/// takes the Lease within its duration and finishes the release with no step repeated
/// or skipped and no request to a destination without ready pods.
/// A replica of weir with `--leader-elect`, like the bed's controller otherwise.
pub(crate) fn replica(bed: &Bed, name: &str, lease: Duration) -> Controller {
    let c = bed.controller.lock().unwrap();
    Controller {
        process: None,
        port: String::new(),
        kubeconfig: c.kubeconfig.clone(),
        dir: c.dir.clone(),
        providers: c.providers.clone(),
        namespace: None,
        webhooks: c.webhooks.clone(),
        notifications: c.notifications.clone(),
        name: name.to_string(),
        extra: vec![
            "--leader-elect".into(),
            format!("--lease-duration={}s", lease.as_secs()),
            format!("--identity={name}"),
        ],
    }
}
