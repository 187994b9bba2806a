//! A real Kubernetes control plane and a real Prometheus on this machine, for the
//! end-to-end tests and the demo: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok (fake nodes whose pods become Ready at once), built from Go
//! modules by `testcluster/build.sh`, started on free loopback ports in a temporary
//! directory. Everything is stopped and removed on drop; each child also gets SIGKILL
//! from the kernel if this process dies first (PR_SET_PDEATHSIG), so a killed test run
//! leaves no stray servers behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::{Client, Config};

use crate::Error;

/// Where the repository is, for the scripts and manifests the harness uses.
/// The repository's top directory (this crate lives in `crates/testkit`).
pub fn repo_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.join("../..").canonicalize().unwrap_or(manifest)
}

/// The `weir` binary to run as a controller: `$WEIR_BIN`, or the one next to the running
/// executable (`cargo build --release --bin weir` puts both in `target/release`).
pub fn weir_binary() -> Result<PathBuf, Error> {
    if let Some(bin) = std::env::var_os("WEIR_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let candidates = exe.ancestors().skip(1).take(2).map(|d| d.join("weir"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Setup(format!(
        "no weir binary next to {}: build it first (cargo build --release --bin weir) or set WEIR_BIN",
        exe.display()
    )))
}

/// One number from Prometheus's `/api/v1/query`: the first sample's value, if any.
/// The metric templates `examples/dev`'s Rollout names, as `config/base/15-providers.yaml`
/// declares them (`tests/manifests.rs` checks they are the same).
pub const EXAMPLE_TEMPLATES: &str = r#"templates:
  - name: jobs-failed-rate
    query: 'sum(rate(jobs_failed_total{namespace="{{namespace}}",workload="{{canary}}"}[{{interval}}])) or vector(0)'
"#;

pub async fn instant_query(address: &str, query: &str) -> Option<f64> {
    let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let body: serde_json::Value = client
        .get(url)
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let value = body.pointer("/data/result/0/value/1")?.as_str()?;
    value.parse().ok()
}

pub fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The directory with the control-plane binaries: `$WEIR_TESTCLUSTER_BIN`, or whatever
/// `testcluster/build.sh` prints (it builds what is missing; warm, it returns at once).
pub fn binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("WEIR_TESTCLUSTER_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let out = Command::new("bash")
        .arg(repo_dir().join("testcluster/build.sh"))
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(Error::Setup(format!("testcluster/build.sh failed ({})", out.status)));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A child process that dies with us, its output in `<dir>/<name>.log`.
pub struct Process {
    pub name: String,
    child: Child,
    log: PathBuf,
    /// How it was started, to start it again the same way.
    command: (PathBuf, Vec<String>, PathBuf, Vec<(String, String)>),
}

/// Starts a child process. It gets SIGKILL if the thread that started it ends, so start
/// long-lived children from a thread that lives as long as they should (a test's own
/// thread, `main`), not from a blocking pool.
pub fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> Result<Process, Error> {
    spawn_with_env(name, program, args, dir, &[])
}

pub fn spawn_with_env(
    name: &str,
    program: &Path,
    args: &[String],
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<Process, Error> {
    let log = dir.join(format!("{name}.log"));
    let out = File::options().create(true).append(true).open(&log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    cmd.envs(env.iter().copied());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::Setup(format!("cannot start {}: {e}", program.display())))?;
    Ok(Process {
        name: name.to_string(),
        child,
        log,
        command: (
            program.to_path_buf(),
            args.to_vec(),
            dir.to_path_buf(),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ),
    })
}

impl Process {
    /// SIGKILL, then the same command again (its log continues).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        let (program, args, dir, env) = self.command.clone();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        *self = spawn_with_env(&self.name.clone(), &program, &args, &dir, &env)?;
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    pub fn tail(&self) -> String {
        let mut s = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

fn http_get(url: &str, token: Option<&str>) -> Option<String> {
    // A tiny probe: plain HTTP only (etcd, Prometheus); the API server is probed with kube.
    use std::io::Write;
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.").then_some(buf)
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Setup(format!("{what} not ready within {limit:?}")))
}

/// The local control plane.
/// Identities whose requests the API server's audit log records (see `kubeconfig_as`).
pub const AUDITED_USERS: [&str; 3] = ["peer-weir", "peer-flagger", "peer-argo"];

pub struct LocalCluster {
    processes: Vec<Process>,
    dir: tempfile::TempDir,
    pub server: String,
    pub token: String,
    pub kubeconfig: PathBuf,
}

impl LocalCluster {
    /// Starts etcd, the API server, the controller manager, the scheduler and kwok, and
    /// registers one fake node. Takes a few seconds with warm binaries.
    pub async fn start(bin: &Path) -> Result<LocalCluster, Error> {
        let dir = tempfile::Builder::new().prefix("weir-cluster-").tempdir()?;
        let d = dir.path().to_path_buf();
        let token = "weir-local-admin".to_string();
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let server = format!("https://127.0.0.1:{api_port}");
        let mut cluster = LocalCluster {
            processes: vec![],
            dir,
            server: server.clone(),
            token: token.clone(),
            kubeconfig: d.join("kubeconfig"),
        };

        for args in [
            vec!["genrsa", "-out", "sa.key", "2048"],
            vec!["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        ] {
            let status = Command::new("openssl")
                .args(&args)
                .current_dir(&d)
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                return Err(Error::Setup("openssl could not make the service-account key".into()));
            }
        }
        // The admin, and one identity per controller a bench compares: the API server's
        // audit log (theirs only) counts each one's requests apart.
        let mut tokens = format!("{token},admin,admin-uid,\"system:masters\"\n");
        for user in AUDITED_USERS {
            tokens += &format!("{token}-{user},{user},{user}-uid,\"system:masters\"\n");
        }
        std::fs::write(d.join("tokens.csv"), tokens)?;
        let audited = AUDITED_USERS.map(|u| format!("\"{u}\"")).join(", ");
        std::fs::write(
            d.join("audit-policy.yaml"),
            format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n\
                 - level: Metadata\n  users: [{audited}]\n- level: None\n"
            ),
        )?;
        std::fs::write(
            &cluster.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\n\
                 users:\n- name: admin\n  user: {{token: {token}}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: admin}}\ncurrent-context: local\n"
            ),
        )?;

        let s = |v: &str| v.to_string();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cluster.processes.push(spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                s("--name=local"),
                s("--data-dir=etcd"),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=local={peer_url}"),
                s("--unsafe-no-fsync"),
            ],
            &d,
        )?);
        cluster.check_alive()?;
        wait_for("etcd", Duration::from_secs(20), || {
            http_get(&format!("{etcd_url}/health"), None).is_some_and(|b| b.contains("true"))
        })
        .map_err(|e| cluster.explain(e))?;

        cluster.processes.push(spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                s("--bind-address=127.0.0.1"),
                s("--advertise-address=127.0.0.1"),
                format!("--secure-port={api_port}"),
                s("--endpoint-reconciler-type=none"),
                s("--cert-dir=certs"),
                s("--token-auth-file=tokens.csv"),
                s("--authorization-mode=RBAC"),
                s("--service-account-key-file=sa.pub"),
                s("--service-account-signing-key-file=sa.key"),
                s("--service-account-issuer=https://kubernetes.default.svc"),
                s("--service-cluster-ip-range=10.96.0.0/16"),
                // No kubelet, no service-account tokens, no node lifecycle: pods are kwok's.
                s("--disable-admission-plugins=ServiceAccount,TaintNodesByCondition"),
                s("--audit-policy-file=audit-policy.yaml"),
                s("--audit-log-path=audit.log"),
                s("--audit-log-format=json"),
                s("--audit-log-maxsize=0"),
            ],
            &d,
        )?);
        cluster.wait_for_apiserver().await?;
        let client = cluster.client().await?;

        let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig.display());
        cluster.processes.push(spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                kubeconfig.clone(),
                s("--leader-elect=false"),
                s("--bind-address=127.0.0.1"),
                s("--secure-port=0"),
                s("--controllers=deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller"),
                // Client-side limits sized for thousands of Deployments (benches/scale.rs),
                // so the cluster, not weir, is never what a measurement waits for.
                s("--kube-api-qps=500"),
                s("--kube-api-burst=1000"),
                s("--concurrent-deployment-syncs=20"),
                s("--concurrent-replicaset-syncs=20"),
            ],
            &d,
        )?);
        cluster.processes.push(spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                kubeconfig.clone(),
                s("--leader-elect=false"),
                s("--bind-address=127.0.0.1"),
                s("--secure-port=0"),
                s("--kube-api-qps=500"),
                s("--kube-api-burst=1000"),
            ],
            &d,
        )?);
        let stages = repo_dir().join("testcluster/kwok-stages.yaml");
        cluster.processes.push(spawn(
            "kwok",
            &bin.join("kwok"),
            &[
                kubeconfig,
                format!("--config={}", stages.display()),
                s("--manage-all-nodes=false"),
                s("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"),
                s("--cidr=10.0.0.1/16"),
                s("--node-ip=10.0.0.1"),
                s("--server-address=127.0.0.1:0"),
            ],
            &d,
        )?);
        apply_yaml(
            &client,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: kwok-node-0\n  annotations: {kwok.x-k8s.io/node: fake}\n  labels: {type: kwok}\n",
        )
        .await?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let start = Instant::now();
        loop {
            cluster.check_alive()?;
            let ready = nodes
                .get_opt("kwok-node-0")
                .await?
                .and_then(|n| n.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(cluster.explain(Error::Setup("the kwok node did not become Ready within 30s".into())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig for one of `AUDITED_USERS` (cluster admins, each counted apart in
    /// `audit_log`).
    pub fn kubeconfig_as(&self, user: &str) -> Result<PathBuf, Error> {
        if !AUDITED_USERS.contains(&user) {
            return Err(Error::Setup(format!("{user} is not one of {AUDITED_USERS:?}")));
        }
        let path = self.dir().join(format!("kubeconfig-{user}"));
        let (server, token) = (&self.server, &self.token);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\n\
                 users:\n- name: {user}\n  user: {{token: {token}-{user}}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: {user}}}\ncurrent-context: local\n"
            ),
        )?;
        Ok(path)
    }

    /// The API server's audit log: one JSON line per completed request of `AUDITED_USERS`.
    pub fn audit_log(&self) -> PathBuf {
        self.dir().join("audit.log")
    }

    pub async fn client(&self) -> Result<Client, Error> {
        let mut config = Config::new(
            self.server
                .parse()
                .map_err(|e| Error::Setup(format!("server URL: {e}")))?,
        );
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        config.default_namespace = "default".into();
        Ok(Client::try_from(config)?)
    }

    /// CPU-seconds each component used so far, by name (etcd, the API server, ...).
    pub fn cpu_seconds(&self) -> BTreeMap<String, f64> {
        let used = self
            .processes
            .iter()
            .map(|p| (p.name.clone(), usage(p.pid()).map_or(0.0, |u| u.1)));
        used.collect()
    }

    /// Fails if a component died, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        for p in &mut self.processes {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(Error::Setup(format!("{} exited ({status}):\n{}", p.name, p.tail())));
            }
        }
        Ok(())
    }

    /// An error with the end of every component's log attached.
    pub fn explain(&self, e: Error) -> Error {
        let logs: Vec<String> = self
            .processes
            .iter()
            .map(|p| format!("--- {}:\n{}", p.name, p.tail()))
            .collect();
        Error::Setup(format!("{e}\n{}", logs.join("\n")))
    }

    /// Kills kube-apiserver and starts it again; returns once it is ready again.
    pub async fn restart_apiserver(&mut self) -> Result<(), Error> {
        let apiserver = self
            .processes
            .iter_mut()
            .find(|p| p.name == "kube-apiserver")
            .ok_or_else(|| Error::Setup("no kube-apiserver".into()))?;
        apiserver.restart()?;
        self.wait_for_apiserver().await
    }

    /// Waits until kube-apiserver answers and is ready (60 s at most).
    async fn wait_for_apiserver(&mut self) -> Result<(), Error> {
        let client = self.client().await?;
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if client.apiserver_version().await.is_ok() && readyz(&client).await {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(self.explain(Error::Setup("kube-apiserver not ready within 60s".into())));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn stop(&mut self) {
        // Reverse order: the API server's clients first, etcd last.
        while let Some(mut p) = self.processes.pop() {
            p.stop();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readyz(client: &Client) -> bool {
    let req = http::Request::get("/readyz").body(Vec::new());
    match req {
        Ok(req) => client.request_text(req).await.is_ok_and(|t| t.trim() == "ok"),
        Err(_) => false,
    }
}

/// Applies every document of a YAML text by server-side apply (field manager
/// `weir-devcluster`), creating CRDs first and waiting until they are served.
pub async fn apply_yaml(client: &Client, text: &str) -> Result<Vec<DynamicObject>, Error> {
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(text)
        .map(serde::Deserialize::deserialize)
        .collect::<Result<Vec<serde_yaml::Value>, _>>()?
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    let params = PatchParams::apply("weir-devcluster").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut waited_for_crds = false;
    for doc in docs
        .iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("CustomResourceDefinition"))
    {
        let crd: CustomResourceDefinition = serde_yaml::from_value(doc.clone())?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
        let start = Instant::now();
        loop {
            let established = crds
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(Error::Setup(format!("CRD {name} not established within 20s")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        waited_for_crds = true;
    }
    if waited_for_crds {
        // Discovery takes a moment to serve new groups.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut applied = vec![];
    for doc in docs
        .iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition"))
    {
        let obj: DynamicObject = serde_yaml::from_value(doc.clone())?;
        let types = obj
            .types
            .clone()
            .ok_or_else(|| Error::Setup("a document without apiVersion/kind".into()))?;
        let gvk = kube::api::GroupVersionKind::try_from(&types).map_err(|e| Error::Setup(format!("{e}")))?;
        let (ar, caps): (ApiResource, ApiCapabilities) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| Error::Setup(format!("the cluster does not serve {gvk:?}")))?;
        let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &ar),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        applied.push(api.patch(&name, &params, &Patch::Apply(&obj)).await?);
    }
    Ok(applied)
}

/// A Prometheus (Debian's package) on a free loopback port with a temporary data dir.
pub struct LocalPrometheus {
    process: Option<Process>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub address: String,
}

impl LocalPrometheus {
    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Starts Prometheus scraping `targets` (host:port) every second.
    pub fn start(targets: &[String]) -> Result<LocalPrometheus, Error> {
        LocalPrometheus::start_every(targets, Duration::from_secs(1))
    }

    /// Scraping every `interval` (a bench with thousands of workloads needs more than 1 s).
    pub fn start_every(targets: &[String], interval: Duration) -> Result<LocalPrometheus, Error> {
        let dir = tempfile::Builder::new().prefix("weir-prometheus-").tempdir()?;
        let port = free_port()?;
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let every = format!("{}s", interval.as_secs().max(1));
        let config = format!(
            "global: {{scrape_interval: {every}, evaluation_interval: {every}}}\nscrape_configs:\n  - job_name: mesh\n    static_configs:\n      - targets: [{}]\n",
            quoted.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let mut p = LocalPrometheus {
            process: None,
            dir,
            port,
            address: format!("http://127.0.0.1:{port}"),
        };
        p.restart()?;
        Ok(p)
    }

    /// (Re)starts the server on the same port and data dir.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        let program = which("prometheus").ok_or_else(|| {
            Error::Setup("prometheus is not installed: run the README's test command, which installs it (apt-get install prometheus)".into())
        })?;
        let d = self.dir.path();
        let args = [
            format!("--config.file={}", d.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", d.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{}", self.port),
        ];
        self.process = Some(spawn("prometheus", &program, &args, d)?);
        let ready = format!("{}/-/ready", self.address);
        wait_for("Prometheus", Duration::from_secs(30), || {
            http_get(&ready, None).is_some_and(|b| b.starts_with("HTTP/1.1 200") || b.starts_with("HTTP/1.0 200"))
        })
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `main` of a cluster bench: runs `bench` on a multi-threaded runtime under
/// `cargo bench` (with `--bench`), and nothing under `cargo test --all-targets`; exits 1
/// with the error when it fails.
pub fn bench_main<F>(name: &str, bench: impl FnOnce() -> F)
where
    F: std::future::Future<Output = Result<(), Error>>,
{
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: no tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(bench()) {
        eprintln!("{name} failed: {e}");
        std::process::exit(1);
    }
}

/// (RSS in MiB, CPU-seconds: user + system) of a running process, from /proc.
pub fn usage(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces): utime and stime are the 12th and
    // 13th fields, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kb / 1024.0, ticks / 100.0))
}

/// What the API server's audit log holds of one identity's requests over a time.
#[derive(Default)]
pub struct Audited {
    pub all: u64,
    pub writes: u64,
    /// How many of each verb and resource ("get deployments", "patch rollouts/status").
    pub kinds: BTreeMap<String, u64>,
    /// The API server's time for each request but watches (received → response
    /// complete), in ms: what a controller waits on the API server.
    pub server_ms: Vec<f64>,
}

/// Requests the API server's audit log holds for `user`, received in [from, to].
pub fn audited_requests(log: &Path, user: &str, from: jiff::Timestamp, to: jiff::Timestamp) -> Result<Audited, Error> {
    let text = std::fs::read_to_string(log)?;
    let mut audited = Audited::default();
    let time =
        |entry: &serde_json::Value, field: &str| entry[field].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if entry.pointer("/user/username").and_then(serde_json::Value::as_str) != Some(user) {
            continue;
        }
        let received = time(&entry, "requestReceivedTimestamp");
        let Some(received) = received.filter(|t| *t >= from && *t <= to) else {
            continue;
        };
        audited.all += 1;
        let verb = entry["verb"].as_str().unwrap_or("?");
        if matches!(verb, "create" | "update" | "patch" | "delete") {
            audited.writes += 1;
        }
        if let Some(done) = time(&entry, "stageTimestamp").filter(|_| verb != "watch") {
            audited
                .server_ms
                .push(done.duration_since(received).as_secs_f64() * 1000.0);
        }
        let resource = entry
            .pointer("/objectRef/resource")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?");
        let sub = entry
            .pointer("/objectRef/subresource")
            .and_then(serde_json::Value::as_str);
        let kind = match sub {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        *audited.kinds.entry(kind).or_insert(0) += 1;
    }
    Ok(audited)
}

/// "median / p99 / max unit" of a list; milliseconds whole, anything else to a tenth.
pub fn spread_of(mut v: Vec<f64>, unit: &str) -> String {
    if v.is_empty() {
        return "—".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let digits = if unit == "ms" { 0 } else { 1 };
    let (median, p99, max) = (at(0.5), at(0.99), v[v.len() - 1]);
    format!("{median:.digits$} / {p99:.digits$} / {max:.digits$} {unit}")
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Gateway API's standard-channel CRDs (HTTPRoute, GRPCRoute, Gateway, GatewayClass,
/// ReferenceGrant) from the module `testcluster/gateway-api/go.mod` pins, as one YAML
/// text to apply.
pub fn gateway_api_crds() -> Result<String, Error> {
    let out = Command::new("bash")
        .arg(repo_dir().join("testcluster/gateway-api-crds.sh"))
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "testcluster/gateway-api-crds.sh failed ({})",
            out.status
        )));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let kinds = [
        "httproutes",
        "grpcroutes",
        "gateways",
        "gatewayclasses",
        "referencegrants",
    ];
    let mut text = String::new();
    for kind in kinds {
        text += &std::fs::read_to_string(dir.join(format!("gateway.networking.k8s.io_{kind}.yaml")))?;
        text += "\n---\n";
    }
    Ok(text)
}
