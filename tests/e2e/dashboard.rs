//! `weir dashboard` in headless Chromium, while a bad canary runs and after its rollback.

use super::*;

/// Debian's chromium, headless, on a page of the dashboard: its DOM after load, or a
/// screenshot into `screenshot`.
pub(crate) async fn chromium(url: &str, screenshot: Option<&Path>) -> Result<String, String> {
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    match screenshot {
        Some(path) => args.extend([
            format!("--screenshot={}", path.display()),
            "--window-size=1100,1450".into(),
        ]),
        None => args.push("--dump-dom".into()),
    }
    args.push(url.to_string());
    let run = tokio::process::Command::new("chromium")
        .args(&args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| format!("chromium on {url}: no answer within 60 s"))?
        .map_err(|e| format!("chromium: {e} (testcluster/prepare.sh installs it)"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!("chromium on {url}: {}", String::from_utf8_lossy(&out.stderr))),
    }
}

#[test]
pub(crate) fn the_dashboard_shows_a_release_and_its_rollback() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start(13).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let result = dashboard_in_a_browser(&bed, &env, &failures).await;
        let mut errors: Vec<String> = result.err().into_iter().collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-dash".to_string()]).await;
    });
}

/// `weir dashboard` beside the controller; headless Chromium loads the list and the
/// release page while a bad canary runs (Progressing, the weight chart) and after its
/// rollback (the RolledBack decision marked, the error-ratio chart against its bound),
/// and saves a screenshot in target/dashboard.png.
pub(crate) async fn dashboard_in_a_browser(bed: &Bed, env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-dash";
    let s = Scenario::start(env, f, ns, &env.provider).await?;
    let port = devcluster::free_port().map_err(|e| e.to_string())?;
    let kubeconfig = env.kubeconfig.display().to_string();
    let _dashboard = devcluster::spawn_with_env(
        "dashboard",
        Path::new(env!("CARGO_BIN_EXE_weir")),
        &[
            "dashboard".into(),
            format!("--addr=127.0.0.1:{port}"),
            format!("--prometheus={}", bed._prometheus.address),
            // The local Prometheus scrapes every second.
            "--interval=3s".into(),
            "-A".into(),
        ],
        bed.cluster.dir(),
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .map_err(|e| format!("start the dashboard: {e}"))?;
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while http_text(&port.to_string(), "/").await.is_empty() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err("the dashboard did not answer within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.bump("nginxdemos/hello:2.0-bad").await;
    s.until_weight(10).await?;
    let page = format!("{base}/rollouts/{ns}/backend");
    let during = chromium(&page, None).await?;
    check(
        f,
        during.contains("Progressing") && during.contains("Canary weight") && during.contains("<polyline"),
        format!("{ns}: the page during the canary shows no progress:\n{during}"),
    );
    let list = chromium(&format!("{base}/"), None).await?;
    check(
        f,
        list.contains("e2e-dash/backend"),
        format!("{ns}: the list misses the Rollout:\n{list}"),
    );
    s.until_phase(&[Phase::RolledBack], Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = chromium(&page, None).await?;
    check(
        f,
        after.contains("RolledBack")
            && after.contains("Error ratio")
            && after.contains("bound 1 %")
            && after.contains("/ 800"),
        format!("{ns}: the page after the rollback misses it:\n{after}"),
    );
    let shot = devcluster::repo_dir().join("target/dashboard.png");
    chromium(&page, Some(&shot)).await?;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    check(
        f,
        size > 20_000,
        format!("the screenshot {} has {size} bytes", shot.display()),
    );
    eprintln!("dashboard: screenshot in {} ({size} bytes)", shot.display());
    Ok(())
}
