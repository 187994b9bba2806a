//! weir installed by its Helm chart: `helm install` (Helm built from the pinned
//! `helm.sh/helm/v4`) puts the CRD, RBAC, ConfigMap and Deployment on the cluster, and
//! weir runs exactly as the chart says — the chart's ServiceAccount, its Deployment's
//! arguments, its ConfigMap's files — and completes releases. (The pods kwok starts for
//! the chart's Deployment run nothing; the controller runs on this machine.)

use k8s_openapi::api::core::v1::ConfigMap;

use super::*;

/// Installs the chart with the bed's admin files as values, then points `controller`
/// at what the chart installed.
pub(crate) async fn install(
    cluster: &LocalCluster,
    client: &Client,
    controller: &mut Controller,
) -> Result<(), String> {
    let helm = weir_testkit::gitops::tools().map_err(|e| e.to_string())?.join("helm");
    let file = |path: &str| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        serde_saphyr::from_str(&text).map_err(|e| format!("{path}: {e}"))
    };
    let values = json!({"config": {
        "providers": file(&controller.providers)?,
        "notifications": file(&controller.notifications)?,
        "webhooks": file(&controller.webhooks)?,
    }});
    let values_file = cluster.dir().join("helm-values.json");
    std::fs::write(&values_file, values.to_string()).map_err(|e| e.to_string())?;
    let chart = devcluster::repo_dir().join("charts/weir");
    let args = [
        "install",
        "weir",
        &chart.display().to_string(),
        "--namespace",
        "weir-system",
        "--create-namespace",
    ]
    .map(String::from)
    .into_iter()
    .chain(["--values".into(), values_file.display().to_string()])
    .chain(["--kubeconfig".into(), cluster.kubeconfig.display().to_string()])
    .collect::<Vec<_>>();
    let out = tokio::process::Command::new(&helm)
        .args(&args)
        .env("HELM_CACHE_HOME", cluster.dir().join("helm-cache"))
        .env("HELM_CONFIG_HOME", cluster.dir().join("helm-config-home"))
        .env("HELM_DATA_HOME", cluster.dir().join("helm-data"))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{}: {e}", helm.display()))?;
    if !out.status.success() {
        return Err(format!("helm {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let dir = cluster.dir().join("helm-config");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), "weir-system")
        .get("weir-providers")
        .await;
    let configmap = configmap.map_err(|e| format!("the chart's ConfigMap: {e}"))?;
    for (name, text) in configmap.data.unwrap_or_default() {
        std::fs::write(dir.join(&name), text).map_err(|e| e.to_string())?;
    }
    let deployment = deployment(client, "weir-system", "weir")
        .await
        .ok_or("the chart's Deployment")?;
    let container = deployment
        .spec
        .template
        .spec
        .and_then(|s| s.containers.into_iter().next());
    let chart_args = container.and_then(|c| c.args).ok_or("the Deployment's args")?;
    apply_chart_args(controller, &chart_args, &dir)?;
    controller.kubeconfig = token_kubeconfig(cluster, client).await;
    Ok(())
}

/// The chart's arguments, with its files read from `dir` and its servers on loopback
/// (the bed picks the port): every flag the chart sets reaches weir.
fn apply_chart_args(controller: &mut Controller, args: &[String], dir: &Path) -> Result<(), String> {
    let local = |arg: &str| arg.replace("/etc/weir/", &format!("{}/", dir.display()));
    controller.extra.clear();
    for arg in args {
        match arg.split_once('=') {
            _ if arg == "controller" => {}
            Some(("--http-addr" | "--metrics-addr", _)) => {}
            Some(("--providers", _)) => controller.providers = local(arg.split_once('=').unwrap().1),
            Some(("--notifications", _)) => controller.notifications = local(arg.split_once('=').unwrap().1),
            Some(("--webhooks", _)) => controller.webhooks = local(arg.split_once('=').unwrap().1),
            _ => controller.extra.push(local(arg)),
        }
    }
    match args.iter().any(|a| a == "--leader-elect") {
        true => Ok(()),
        false => Err(format!("the chart's default runs no leader election: {args:?}")),
    }
}

/// The chart installed: a healthy release is promoted and a bad one rolled back, by
/// weir as the chart runs it.
#[test]
pub(crate) fn installed_with_helm() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start_with(37, "", Identity::HelmChart).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let results = tokio::join!(
            releases::healthy_canary_is_promoted(&env, &failures),
            releases::bad_canary_is_rolled_back(&env, &failures, "bad", "request-success-rate"),
        );
        let mut errors: Vec<String> = [results.0, results.1].into_iter().filter_map(Result::err).collect();
        let holder = lease_holder(&env.client).await;
        check(&failures, holder.is_some(), "no replica holds the chart's Lease".into());
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-healthy".into(), "e2e-bad".into()]).await;
    });
}
