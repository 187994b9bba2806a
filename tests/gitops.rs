//! weir in GitOps tools, without a cluster: weir's Argo CD customization
//! (`config/argocd/weir.dev/Rollout`) passes its own tests in Argo CD's format, run by
//! gopher-lua as Argo CD runs them; kstatus (cli-utils) and Argo CD read every fixture
//! (Rollouts captured in each phase by the end-to-end test) as the phase table says;
//! the test files, `argocd-cm.yaml` and the README's table are what the fixtures and
//! the Lua files make (`WEIR_BLESS=1` rewrites them).

use std::path::PathBuf;

use weir_testkit::gitops::{self, TABLE};

fn bless() -> bool {
    std::env::var_os("WEIR_BLESS").is_some()
}

#[test]
fn argo_cd_runs_the_customizations_own_tests() {
    let tool = gitops::tools().expect("tests/gitops/build.sh").join("weir-gitops");
    let out = std::process::Command::new(tool)
        .arg("test")
        .arg(gitops::customization_dir())
        .output()
        .expect("weir-gitops test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{} health", TABLE.len())), "{text}");
}

#[test]
fn every_phase_reads_in_argo_cd_and_kstatus_as_the_table_says() {
    let dir = gitops::customization_dir();
    let fixtures = gitops::fixtures(&dir).unwrap();
    for expected in TABLE {
        let phase = expected.phase.map(str::to_string);
        assert!(
            fixtures.contains_key(&phase),
            "no fixture for {phase:?}: run the end-to-end test with WEIR_BLESS=1"
        );
    }
    let files: Vec<PathBuf> = (fixtures.keys())
        .map(|p| dir.join("testdata").join(gitops::fixture_name(p.as_deref())))
        .collect();
    let readings = gitops::read(&files).unwrap();
    let wrong: Vec<String> = (fixtures.keys().zip(&readings))
        .flat_map(|(phase, reading)| gitops::check(phase.as_deref(), reading))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A spec edit weir has not observed yet reads as in progress, whatever the phase says.
#[test]
fn an_unobserved_generation_reads_as_in_progress() {
    let dir = gitops::customization_dir();
    let mut healthy = gitops::fixtures(&dir).unwrap()[&Some("Healthy".to_string())].clone();
    healthy["metadata"]["generation"] = (healthy["status"]["observedGeneration"].as_i64().unwrap() + 1).into();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("edited.yaml");
    std::fs::write(&file, serde_json::to_string(&healthy).unwrap()).unwrap();
    let reading = &gitops::read(&[file]).unwrap()[0];
    assert_eq!(reading.health.status, "Progressing", "{reading:?}");
    assert_eq!(reading.kstatus.status, "InProgress", "{reading:?}");
}

/// A failing write (`Applied=False`) is Degraded in Argo CD, whatever the phase.
#[test]
fn a_write_that_keeps_failing_is_degraded() {
    let dir = gitops::customization_dir();
    let mut progressing = gitops::fixtures(&dir).unwrap()[&Some("Progressing".to_string())].clone();
    let failed = serde_json::json!({"type": "Applied", "status": "False", "reason": "ApplyFailed",
        "message": "deployments.apps \"backend\" is forbidden", "lastTransitionTime": "2026-12-05T00:00:00Z"});
    progressing["status"]["conditions"].as_array_mut().unwrap().push(failed);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("failing.yaml");
    std::fs::write(&file, serde_json::to_string(&progressing).unwrap()).unwrap();
    let reading = &gitops::read(&[file]).unwrap()[0];
    assert_eq!(reading.health.status, "Degraded", "{reading:?}");
    assert!(reading.health.message.contains("forbidden"), "{reading:?}");
}

#[test]
fn the_test_files_are_what_the_fixtures_make() {
    let dir = gitops::customization_dir();
    let fixtures = gitops::fixtures(&dir).unwrap();
    if bless() {
        gitops::bless(&dir, &fixtures).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    gitops::bless(tmp.path(), &fixtures).unwrap();
    for file in ["health_test.yaml", "actions/action_test.yaml"] {
        let made = std::fs::read_to_string(tmp.path().join(file)).unwrap();
        let kept = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(made == kept, "{file} is stale: run with WEIR_BLESS=1");
    }
    for entry in std::fs::read_dir(tmp.path().join("actions/testdata")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        let kept = std::fs::read_to_string(dir.join("actions/testdata").join(name)).unwrap_or_default();
        assert!(
            std::fs::read_to_string(&path).unwrap() == kept,
            "{name:?} is stale: run with WEIR_BLESS=1"
        );
    }
}

#[test]
fn argocd_cm_is_the_lua_files() {
    let made = gitops::argocd_cm(&gitops::customization_dir()).unwrap();
    let path = gitops::customization_dir().join("../../argocd-cm.yaml");
    if bless() {
        std::fs::write(&path, &made).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        made == kept,
        "config/argocd/argocd-cm.yaml is stale: run with WEIR_BLESS=1"
    );
    let parsed: serde_json::Value = serde_saphyr::from_str(&made).expect("argocd-cm.yaml parses");
    let health = parsed["data"]["resource.customizations.health.weir.dev_Rollout"]
        .as_str()
        .unwrap();
    let lua = std::fs::read_to_string(gitops::customization_dir().join("health.lua")).unwrap();
    assert_eq!(health, lua);
}

#[test]
fn the_readme_shows_the_phase_table() {
    let readme = std::fs::read_to_string(weir_testkit::devcluster::repo_dir().join("README.md")).unwrap();
    let table = gitops::phase_table();
    assert!(
        readme.contains(&table),
        "the README's phase table differs from weir_testkit::gitops::TABLE:\n{table}"
    );
}
