//! GitOps tools read weir's real status right: every Rollout of the run is watched, the
//! first object seen in each phase is kept, and at the end Argo CD's health and actions
//! (weir's Lua, run by gopher-lua) and kstatus (cli-utils) read each one as the phase
//! table (`weir_testkit::gitops::TABLE`) says. `WEIR_BLESS=1` writes them as the Argo CD
//! customization's fixtures.

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use weir_testkit::gitops;

use super::*;

/// Rollouts captured per phase (`None`: before weir's first status).
pub(crate) type Captured = Arc<Mutex<BTreeMap<Option<String>, serde_json::Value>>>;

/// Watches every Rollout of the cluster and keeps the first object seen in each phase;
/// abort the task to stop.
pub(crate) fn capture_phases(client: Client) -> (Captured, tokio::task::JoinHandle<()>) {
    let captured: Captured = Arc::default();
    let keep = captured.clone();
    let task = tokio::spawn(async move {
        let api = Api::<DynamicObject>::all_with(client, &ApiResource::erase::<Rollout>(&()));
        let mut objects = watcher(api, watcher::Config::default()).applied_objects().boxed();
        while let Some(next) = objects.next().await {
            let Ok(object) = next else { continue };
            let Ok(value) = serde_json::to_value(&object) else {
                continue;
            };
            let phase = gitops::phase_of(&value);
            keep.lock().unwrap().entry(phase).or_insert(value);
        }
    });
    (captured, task)
}

/// A canary a person pauses and resumes: the Paused phase the other scenarios do not
/// reach.
pub(crate) async fn a_paused_canary_is_suspended_then_goes_on(env: &Env, f: &Failures) -> Result<(), String> {
    let s = Scenario::start(env, f, "e2e-gitops", &env.provider).await?;
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(10).await?;
    s.annotate("weir.dev/paused", Some("true")).await;
    s.until_phase(&[Phase::Paused], Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.annotate("weir.dev/paused", None).await;
    s.expect_promoted().await?;
    s.expect_no_request_met_no_pods();
    Ok(())
}

/// Every phase the run reached reads as the table says; every phase of the table was
/// reached (Initializing only when a takeover waited long enough to be written).
pub(crate) async fn check_captured(f: &Failures, captured: &Captured) {
    let captured = captured.lock().unwrap().clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = vec![];
    for (phase, rollout) in &captured {
        let path = dir.path().join(gitops::fixture_name(phase.as_deref()));
        let text = serde_json::to_string(&gitops::scrub(rollout.clone())).unwrap();
        std::fs::write(&path, text).expect("write a captured Rollout");
        files.push((phase.clone(), path));
    }
    let paths: Vec<_> = files.iter().map(|(_, p)| p.clone()).collect();
    let readings = tokio::task::spawn_blocking(move || gitops::read(&paths)).await.unwrap();
    let readings = match readings {
        Ok(r) => r,
        Err(e) => return check(f, false, format!("gitops: {e}")),
    };
    for ((phase, _), reading) in files.iter().zip(&readings) {
        for wrong in gitops::check(phase.as_deref(), reading) {
            check(f, false, format!("gitops: {wrong}"));
        }
    }
    for expected in gitops::TABLE.iter().filter(|e| e.phase != Some("Initializing")) {
        let seen = captured.contains_key(&expected.phase.map(str::to_string));
        check(
            f,
            seen,
            format!("gitops: no Rollout was seen in phase {:?}", expected.phase),
        );
    }
    if std::env::var_os("WEIR_BLESS").is_some() {
        gitops::bless(&gitops::customization_dir(), &captured).expect("write the Argo CD fixtures");
    }
}
