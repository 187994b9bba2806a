//! The test bed: a local cluster with the Istio and weir CRDs, the mesh simulator, Prometheus
//! scraping it, weir running as the controller (restartable, as the admin or as its own
//! ServiceAccount), and a loopback webhook service (`Gates`).

use super::*;

pub(crate) type Failures = Arc<Mutex<Vec<String>>>;

pub(crate) struct Env {
    pub(crate) client: Client,
    /// The metric provider most scenarios name (declared to weir by `Bed`).
    pub(crate) provider: String,
    pub(crate) mesh: Arc<Mutex<meshsim::Telemetry>>,
    /// The admin's kubeconfig and the control plane's binaries (kubectl among them).
    pub(crate) kubeconfig: std::path::PathBuf,
    pub(crate) bin: std::path::PathBuf,
}

/// Which router a scenario's application is routed by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Layout {
    /// `examples/dev`: a VirtualService and DestinationRule subsets, sidecars.
    Istio,
    /// `examples/ambient`: an ambient namespace, an HTTPRoute parented by the Service,
    /// one Service per version.
    GatewayApi,
}

impl Layout {
    /// The scenario's namespace: `e2e-<name>`, or `e2e-gw-<name>` on Gateway API.
    pub(crate) fn namespace(self, name: &str) -> String {
        match self {
            Layout::Istio => format!("e2e-{name}"),
            Layout::GatewayApi => format!("e2e-gw-{name}"),
        }
    }

    pub(crate) fn app(self, ns: &str, provider: &str) -> String {
        match self {
            Layout::Istio => app(ns, provider, "backend"),
            Layout::GatewayApi => ambient_app(ns, provider),
        }
    }

    /// The routing object and where in it the canary's weight is.
    pub(crate) fn weight_at(self) -> (ApiResource, &'static str) {
        let gvk = |group: &str, kind: &str| ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, "v1", kind));
        match self {
            Layout::Istio => (
                gvk("networking.istio.io", "VirtualService"),
                "/spec/http/0/route/1/weight",
            ),
            Layout::GatewayApi => (
                gvk("gateway.networking.k8s.io", "HTTPRoute"),
                "/spec/rules/0/backendRefs/1/weight",
            ),
        }
    }
}

/// `examples/ambient`, made fast like `app`: the same Deployment and analysis, routed by
/// an HTTPRoute whose parent is the Service, to one Service per version.
pub(crate) fn ambient_app(ns: &str, provider: &str) -> String {
    let istio = app(ns, provider, "backend");
    let start = istio.find("apiVersion: networking.istio.io/v1").unwrap_or(0);
    let end = istio.find("apiVersion: weir.dev/v1alpha1").unwrap_or(istio.len());
    let routing = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: backend-stable, namespace: {ns}}}
spec: {{selector: {{app: backend, weir.dev/track: stable}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: backend-canary, namespace: {ns}}}
spec: {{selector: {{app: backend, weir.dev/track: canary}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: backend, namespace: {ns}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: backend, port: 80}}]
  rules:
    - name: primary
      timeouts: {{request: 5s}}
      backendRefs:
        - {{name: backend-stable, port: 80, weight: 100}}
        - {{name: backend-canary, port: 80, weight: 0}}
---
"#
    );
    let rollout = istio[end..].replace(
        "    istio:
      virtualService: {name: backend}
      destinationRule: {name: backend, stableSubset: stable, canarySubset: canary}
",
        "    gatewayAPI:
      httpRoute: {name: backend}
      stableService: backend-stable
      canaryService: backend-canary
",
    );
    let namespace = istio[..start].replace(
        "labels: {istio-injection: enabled}",
        "labels: {istio.io/dataplane-mode: ambient}",
    );
    namespace + &routing + &rollout
}

/// The example application, made fast: steps of 4 s, looks every second.
pub(crate) fn app(ns: &str, provider: &str, vs_name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{istio-injection: enabled}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend, namespace: {ns}}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: backend, weir.dev/track: stable}}}}
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: backend, weir.dev/track: stable}}}}
    spec:
      containers: [{{name: backend, image: "nginxdemos/hello:1.0"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: {ns}}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: {ns}}}
spec:
  host: backend
  subsets:
    - {{name: stable, labels: {{weir.dev/track: stable}}}}
    - {{name: canary, labels: {{weir.dev/track: canary}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: {ns}}}
spec:
  hosts: [backend]
  http:
    - name: primary
      retries: {{attempts: 2, perTryTimeout: 2s}}
      timeout: 5s
      route:
        - {{destination: {{host: backend, subset: stable}}, weight: 100}}
        - {{destination: {{host: backend, subset: canary}}, weight: 0}}
---
apiVersion: weir.dev/v1alpha1
kind: Rollout
metadata: {{name: backend, namespace: {ns}}}
spec:
  targetRef: {{kind: Deployment, name: backend}}
  trafficRouting:
    istio:
      virtualService: {{name: {vs_name}}}
      destinationRule: {{name: backend, stableSubset: stable, canarySubset: canary}}
  steps: [{{weight: 10}}, {{weight: 25}}, {{weight: 50}}, {{weight: 100}}]
  progressDeadline: 15s
  scaleDownDelay: 2s
  analysis:
    interval: 4s
    tick: 1s
    sequential: {{minDwell: 2s, minRequests: 10}}
    provider: {provider}
    metrics:
      - {{name: request-success-rate, min: 99}}
      - {{name: request-duration, quantile: 0.99, max: 500ms}}
"#
    )
}

/// A webhook service on loopback, as a team would run one: `/slow-yes` says yes after
/// 2 s, `/confirm` says no until a person opens it, `/post` takes the post-rollout
/// report, `/never` never answers. It keeps every request.
#[derive(Clone, Default)]
pub(crate) struct Gates {
    pub(crate) base: String,
    pub(crate) open: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Gates {
    pub(crate) async fn start() -> Gates {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("gate port");
        let gates = Gates {
            base: format!("http://{}", listener.local_addr().unwrap()),
            ..Gates::default()
        };
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(Gates::answer))
            .with_state(gates.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        gates
    }

    pub(crate) async fn answer(
        axum::extract::State(gates): axum::extract::State<Gates>,
        axum::extract::Path(path): axum::extract::Path<String>,
        body: axum::body::Bytes,
    ) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode;
        let value = serde_json::from_slice(&body).unwrap_or_default();
        gates.got.lock().unwrap().push((path.clone(), value));
        match path.as_str() {
            "slow-yes" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                (StatusCode::OK, "smoke test passed")
            }
            "confirm" if gates.open.load(std::sync::atomic::Ordering::SeqCst) => (StatusCode::OK, "approved"),
            "confirm" => (StatusCode::FORBIDDEN, "not approved yet"),
            "never" => std::future::pending().await,
            _ => (StatusCode::OK, "noted"),
        }
    }

    /// The kinds of the notifications the `inbox` receiver got about namespace `ns`.
    pub(crate) fn notifications(&self, ns: &str) -> Vec<String> {
        let inbox = self.calls("inbox");
        let of_ns = inbox.iter().filter(|n| n["namespace"] == ns);
        of_ns.map(|n| n["kind"].as_str().unwrap_or("?").to_string()).collect()
    }

    pub(crate) fn calls(&self, path: &str) -> Vec<serde_json::Value> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|(p, _)| p == path).map(|(_, v)| v.clone()).collect()
    }

    /// Waits (at most `limit`) until `path` was called `n` times.
    pub(crate) async fn wait_calls(&self, path: &str, n: usize, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while self.calls(path).len() < n {
            if start.elapsed() > limit {
                return Err(format!(
                    "/{path} called {} times, not {n}, within {limit:?}",
                    self.calls(path).len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// Runs a command of the control plane's `bin` (or weir itself) as the admin; its stdout.
/// Awaited, not blocking: the other scenarios' tasks share the runtime's threads.
pub(crate) async fn run_as_admin(env: &Env, program: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{}: {e}", program.display()))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!(
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The `weir` binary as the controller, restartable.
pub(crate) struct Controller {
    pub(crate) process: Option<Process>,
    /// Of its /metrics, /healthz and /readyz.
    pub(crate) port: String,
    pub(crate) kubeconfig: String,
    pub(crate) dir: std::path::PathBuf,
    /// The metric providers file the cluster admin gives weir.
    pub(crate) providers: String,
    /// `--namespace`: the one namespace weir watches, or all.
    pub(crate) namespace: Option<String>,
    /// The admin's webhook allow list and notification receivers.
    pub(crate) webhooks: String,
    pub(crate) notifications: String,
    /// Its log's name (`<name>.log` in `dir`) and arguments of its own.
    pub(crate) name: String,
    pub(crate) extra: Vec<String>,
}

/// Who weir runs as in a test bed.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Identity {
    /// The cluster's admin: the suite's default, RBAC not under test.
    Admin,
    /// Its own ServiceAccount with exactly `config/`'s cluster-wide RBAC.
    ServiceAccount,
    /// Its own ServiceAccount with exactly `config/namespaced`'s RBAC, made for this
    /// namespace, and `--namespace` set to it.
    NamespacedServiceAccount(&'static str),
    /// Installed by `helm install` of `charts/weir` (the Rollout CRD too): weir runs as
    /// the chart's ServiceAccount, with the arguments of the chart's Deployment and the
    /// files of its ConfigMap (`helm::install`).
    HelmChart,
}

impl Controller {
    pub(crate) fn start(&mut self) -> Result<(), weir_testkit::Error> {
        let port = devcluster::free_port()?.to_string();
        self.port = port.clone();
        let args = [
            "controller".to_string(),
            format!("--http-addr=127.0.0.1:{port}"),
            format!("--providers={}", self.providers),
            format!("--webhooks={}", self.webhooks),
            format!("--notifications={}", self.notifications),
        ]
        .into_iter()
        .chain(self.extra.iter().cloned())
        .chain(self.namespace.iter().map(|ns| format!("--namespace={ns}")))
        .collect::<Vec<_>>();
        let env = [("KUBECONFIG", self.kubeconfig.as_str()), ("RUST_LOG", "info,kube=warn")];
        self.process = Some(devcluster::spawn_with_env(
            &self.name,
            Path::new(env!("CARGO_BIN_EXE_weir")),
            &args,
            &self.dir,
            &env,
        )?);
        Ok(())
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }
}

/// A local cluster with the Istio and weir CRDs, the mesh simulator, a Prometheus
/// scraping it and weir running as the controller.
pub(crate) struct Bed {
    pub(crate) cluster: LocalCluster,
    pub(crate) client: Client,
    pub(crate) mesh: meshsim::Mesh,
    /// Behind the providers `main`, `blind` and `blip` declared to weir (`main` is only
    /// kept running).
    pub(crate) _prometheus: LocalPrometheus,
    pub(crate) blind: Mutex<LocalPrometheus>,
    pub(crate) blip: Mutex<LocalPrometheus>,
    pub(crate) controller: Arc<Mutex<Controller>>,
    /// The webhook service the admin allowed Rollouts to call.
    pub(crate) gates: Gates,
}

impl Bed {
    pub(crate) async fn start(seed: u64) -> Bed {
        Bed::start_with(seed, "", Identity::Admin).await
    }

    /// `extra_providers`: more lines for the providers file.
    pub(crate) async fn start_with(seed: u64, extra_providers: &str, identity: Identity) -> Bed {
        let bin = devcluster::binaries().expect("control-plane binaries (testcluster/build.sh)");
        let cluster = LocalCluster::start(&bin).await.expect("local cluster");
        let client = cluster.client().await.unwrap();
        let repo = devcluster::repo_dir();
        let crds = match identity {
            Identity::HelmChart => &["testcluster/istio-crds.yaml"][..],
            _ => &["testcluster/istio-crds.yaml", "crds/rollout.yaml"],
        };
        for file in crds {
            let text = std::fs::read_to_string(repo.join(file)).unwrap();
            devcluster::apply_yaml(&client, &text)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let gateway_api = devcluster::gateway_api_crds().expect("Gateway API's CRDs");
        devcluster::apply_yaml(&client, &gateway_api)
            .await
            .expect("Gateway API's CRDs apply");
        let config =
            MeshConfig::from_yaml(&std::fs::read_to_string(repo.join("testcluster/mesh.yaml")).unwrap()).unwrap();
        let mesh = meshsim::start(client.clone(), config, "127.0.0.1:0".parse().unwrap(), seed)
            .await
            .unwrap();
        let start = || LocalPrometheus::start(&[mesh.addr.to_string()]).expect("Prometheus");
        let (prometheus, blind, blip) = (start(), start(), start());
        let providers = cluster.dir().join("providers.yaml");
        let declare = |name: &str, p: &LocalPrometheus| {
            let default = name == "main";
            format!(
                "  - {{name: {name}, address: '{}', timeout: 1s, default: {default}}}\n",
                p.address
            )
        };
        std::fs::write(
            &providers,
            format!(
                "providers:\n{}{}{}{extra_providers}{}",
                declare("main", &prometheus),
                declare("blind", &blind),
                declare("blip", &blip),
                // The metric templates examples/dev's Rollout names, as config/ ships them.
                devcluster::EXAMPLE_TEMPLATES
            ),
        )
        .unwrap();
        let kubeconfig = match identity {
            Identity::Admin => cluster.kubeconfig.display().to_string(),
            Identity::HelmChart => String::new(),
            _ => service_account_kubeconfig(&cluster, &client, &bin, identity).await,
        };
        let namespace = match identity {
            Identity::NamespacedServiceAccount(ns) => Some(ns.to_string()),
            _ => None,
        };
        let gates = Gates::start().await;
        let webhooks = cluster.dir().join("webhooks.yaml");
        std::fs::write(&webhooks, format!("allowedUrls: [\"{}/\"]\n", gates.base)).unwrap();
        let notifications = cluster.dir().join("notifications.yaml");
        let inbox = format!(
            "receivers:\n  - {{name: inbox, type: webhook, url: '{}/inbox'}}\n",
            gates.base
        );
        std::fs::write(&notifications, inbox).unwrap();
        let mut controller = Controller {
            process: None,
            port: String::new(),
            kubeconfig,
            dir: cluster.dir().to_path_buf(),
            providers: providers.display().to_string(),
            namespace,
            webhooks: webhooks.display().to_string(),
            notifications: notifications.display().to_string(),
            name: "weir".into(),
            extra: Vec::new(),
        };
        if identity == Identity::HelmChart {
            let installed = super::helm::install(&cluster, &client, &mut controller).await;
            installed.unwrap_or_else(|e| panic!("helm install: {e}"));
        }
        let controller = Arc::new(Mutex::new(controller));
        controller.lock().unwrap().start().expect("start weir");
        let port = controller.lock().unwrap().port.clone();
        wait_ready(&port).await;
        Bed {
            cluster,
            client,
            mesh,
            _prometheus: prometheus,
            blind: Mutex::new(blind),
            blip: Mutex::new(blip),
            controller,
            gates,
        }
    }

    pub(crate) fn env(&self) -> Env {
        Env {
            client: self.client.clone(),
            provider: "main".into(),
            mesh: self.mesh.telemetry.clone(),
            kubeconfig: self.cluster.kubeconfig.clone(),
            bin: devcluster::binaries().expect("control-plane binaries"),
        }
    }

    /// Fails the test with the failures, weir's log and the Events of `namespaces`.
    pub(crate) async fn report(&self, errors: Vec<String>, namespaces: &[String]) {
        if errors.is_empty() {
            return;
        }
        let log = self
            .controller
            .lock()
            .unwrap()
            .process
            .as_ref()
            .map(|p| p.tail())
            .unwrap_or_default();
        let mut events = BTreeMap::new();
        for ns in namespaces {
            let list = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), ns)
                .list(&Default::default())
                .await;
            let notes: Vec<String> = list
                .map(|l| {
                    l.items
                        .iter()
                        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
                        .collect()
                })
                .unwrap_or_default();
            events.insert(ns.clone(), notes);
        }
        // The whole log outlives the cluster's temporary directory, for a post-mortem.
        let kept = devcluster::repo_dir().join("target/e2e-failure-weir.log");
        let _ = std::fs::copy(self.cluster.dir().join("weir.log"), &kept);
        panic!(
            "{} failure(s):\n{}\n\nweir log (tail; whole in {}):\n{log}\n\nEvents: {events:#?}",
            errors.len(),
            errors.join("\n"),
            kept.display()
        );
    }
}

/// What `kubectl apply -k` would install from a kustomization under `config/`, but for
/// the controller's Deployment (the tests run weir as a process). The namespaced set is
/// made for `namespace`, as its kustomization tells a user to.
pub(crate) fn config_objects(bin: &Path, kustomization: &str, namespace: Option<&str>) -> String {
    let out = std::process::Command::new(bin.join("kubectl"))
        .args([
            "kustomize",
            &devcluster::repo_dir().join(kustomization).display().to_string(),
        ])
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {kustomization}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = String::from_utf8(out.stdout).unwrap();
    if let Some(ns) = namespace {
        text = text
            .replace("namespace: apps\n", &format!("namespace: {ns}\n"))
            .replace("--namespace=apps", &format!("--namespace={ns}"));
    }
    text.split("\n---\n")
        .filter(|doc| !doc.contains("\nkind: Deployment\n"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Applies `config/`'s namespace, ServiceAccount and RBAC (cluster-wide or namespaced, as
/// `identity` says), asks the TokenRequest API for a token of weir's ServiceAccount, and
/// writes a kubeconfig that uses it.
pub(crate) async fn service_account_kubeconfig(
    cluster: &LocalCluster,
    client: &Client,
    bin: &Path,
    identity: Identity,
) -> String {
    let objects = match identity {
        Identity::NamespacedServiceAccount(ns) => {
            devcluster::apply_yaml(
                client,
                &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
            )
            .await
            .expect("the watched namespace");
            let text = config_objects(bin, "config/namespaced", Some(ns));
            assert!(
                !text.contains("kind: ClusterRole"),
                "config/namespaced grants cluster-wide: {text}"
            );
            text
        }
        _ => config_objects(bin, "config", None),
    };
    devcluster::apply_yaml(client, &objects)
        .await
        .unwrap_or_else(|e| panic!("config/: {e}"));
    token_kubeconfig(cluster, client).await
}

/// A kubeconfig that authenticates as weir-system's ServiceAccount `weir`.
pub(crate) async fn token_kubeconfig(cluster: &LocalCluster, client: &Client) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), "weir-system")
        .create_token_request("weir", &PostParams::default(), &request)
        .await
        .expect("a token for weir's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let path = cluster.dir().join("weir-sa.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{}\", insecure-skip-tls-verify: true}}\n\
             users:\n- name: weir\n  user: {{token: {token}}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: weir}}\ncurrent-context: local\n",
            cluster.server
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// weir answers /readyz with 200 once its Rollout watch has synced (503 before), and
/// /healthz with 200 while its loop runs.
pub(crate) async fn wait_ready(port: &str) {
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    let start = Instant::now();
    while get("/readyz").await != 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "weir not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get("/healthz").await, 200);
}

/// The two tests each run a cluster; one at a time on a small machine.
pub(crate) static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}
