//! How GitOps tools read a Rollout: Argo CD's health and actions (weir's Lua in
//! `config/argocd/weir.dev/Rollout`, run by gopher-lua) and kstatus (cli-utils, as
//! Flux's health checks read it), both through the `weir-gitops` tool that
//! `tests/gitops/build.sh` builds. `TABLE` is what each phase must read as; the README's
//! phase table is this table, and the fixtures in `testdata/` are Rollouts captured in
//! each phase by the end-to-end test (`WEIR_BLESS=1` writes them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::devcluster::repo_dir;
use crate::{Error, Result};

/// What one phase reads as.
pub struct Expected {
    /// `status.phase`, or `None` for a Rollout weir has not written a status for yet.
    pub phase: Option<&'static str>,
    /// Argo CD's health status.
    pub argocd: &'static str,
    /// kstatus's status (Flux's health checks, `kstatus`-based waits).
    pub kstatus: &'static str,
    /// The Argo CD actions enabled (the others are offered disabled).
    pub actions: &'static [&'static str],
}

/// Every phase, as Argo CD and kstatus must read it.
pub const TABLE: &[Expected] = &[
    // kstatus reads an object without status as Current: its convention, not weir's
    // choice; weir's first status follows the finalizer within a reconcile.
    row(None, "Progressing", "Current", &[]),
    row(Some("Initializing"), "Progressing", "InProgress", &[]),
    row(Some("Healthy"), "Healthy", "Current", &[]),
    row(
        Some("Progressing"),
        "Progressing",
        "InProgress",
        &["abort", "pause", "promote"],
    ),
    row(
        Some("Paused"),
        "Suspended",
        "InProgress",
        &["abort", "promote", "resume"],
    ),
    row(Some("Promoting"), "Progressing", "InProgress", &["abort"]),
    row(Some("Succeeded"), "Healthy", "Current", &[]),
    row(Some("RolledBack"), "Degraded", "Failed", &["retry"]),
    row(Some("InvalidSpec"), "Degraded", "Failed", &[]),
    row(Some("Deleting"), "Progressing", "Terminating", &[]),
];

const fn row(
    phase: Option<&'static str>,
    argocd: &'static str,
    kstatus: &'static str,
    actions: &'static [&'static str],
) -> Expected {
    Expected {
        phase,
        argocd,
        kstatus,
        actions,
    }
}

/// Every action `actions/discovery.lua` offers.
pub const ACTIONS: [&str; 5] = ["abort", "pause", "promote", "resume", "retry"];

/// The Argo CD customization's directory in the repository.
pub fn customization_dir() -> PathBuf {
    repo_dir().join("config/argocd/weir.dev/Rollout")
}

/// The fixture file (under `testdata/`) of a phase.
pub fn fixture_name(phase: Option<&str>) -> String {
    let name = phase.unwrap_or("NoStatus");
    let mut file = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            file.push('-');
        }
        file.push(c.to_ascii_lowercase());
    }
    file + ".yaml"
}

/// The key a captured Rollout is filed under: its phase, or `None` before any status.
pub fn phase_of(rollout: &Value) -> Option<String> {
    rollout["status"]["phase"].as_str().map(str::to_string)
}

/// Builds `weir-gitops` and Helm (a warm cache returns at once); their directory.
pub fn tools() -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_dir().join("tests/gitops/build.sh"))
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(Error::Setup(format!("tests/gitops/build.sh failed ({})", out.status)));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// What `weir-gitops read` says of one object.
#[derive(Debug, Deserialize)]
pub struct Reading {
    pub file: String,
    pub health: Health,
    /// Action name → disabled.
    pub actions: BTreeMap<String, bool>,
    pub kstatus: Health,
}

#[derive(Debug, Deserialize)]
pub struct Health {
    pub status: String,
    pub message: String,
}

/// Runs Argo CD's health and discovery and kstatus on each file.
pub fn read(files: &[PathBuf]) -> Result<Vec<Reading>> {
    let tool = tools()?.join("weir-gitops");
    let out = Command::new(tool)
        .arg("read")
        .arg(customization_dir())
        .args(files)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(Error::Setup(format!("weir-gitops read failed ({})", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// Where `reading` of a Rollout in `phase` differs from `TABLE`; one line each.
pub fn check(phase: Option<&str>, reading: &Reading) -> Vec<String> {
    let Some(expected) = TABLE.iter().find(|e| e.phase == phase) else {
        return vec![format!("{}: phase {phase:?} is not in the table", reading.file)];
    };
    let mut wrong = vec![];
    let what = format!("{} ({})", reading.file, phase.unwrap_or("no status"));
    if reading.health.status != expected.argocd {
        wrong.push(format!(
            "{what}: Argo CD health {:?}, expected {}",
            reading.health, expected.argocd
        ));
    }
    if reading.kstatus.status != expected.kstatus {
        wrong.push(format!(
            "{what}: kstatus {:?}, expected {}",
            reading.kstatus, expected.kstatus
        ));
    }
    let enabled: Vec<&str> = (reading.actions.iter())
        .filter(|(_, disabled)| !**disabled)
        .map(|(name, _)| name.as_str())
        .collect();
    if enabled != expected.actions || reading.actions.len() != ACTIONS.len() {
        wrong.push(format!(
            "{what}: actions {:?}, expected {:?} enabled",
            reading.actions, expected.actions
        ));
    }
    wrong
}

/// A captured Rollout as a fixture: what the API server adds for its own bookkeeping
/// (managed fields, uid) removed, so a fixture reads as the object a person sees.
pub fn scrub(mut rollout: Value) -> Value {
    if let Some(meta) = rollout["metadata"].as_object_mut() {
        for field in ["managedFields", "uid", "selfLink"] {
            meta.remove(field);
        }
    }
    rollout
}

/// Writes the fixtures of the captured Rollouts and Argo CD's test files for them:
/// `health_test.yaml` (health from `TABLE`, message as weir wrote it) and
/// `actions/action_test.yaml` with each action's expected output (the annotation the
/// kubectl plugin would set, written here without Lua).
/// `dir` is the customization's directory (`customization_dir`, or a copy a test
/// compares with it).
pub fn bless(dir: &Path, captured: &BTreeMap<Option<String>, Value>) -> Result<()> {
    std::fs::create_dir_all(dir.join("testdata"))?;
    std::fs::create_dir_all(dir.join("actions/testdata"))?;
    let mut health_tests = vec![];
    let mut discovery_tests = vec![];
    let mut action_tests = vec![];
    for (phase, rollout) in captured {
        let name = fixture_name(phase.as_deref());
        let rollout = scrub(rollout.clone());
        write_yaml(&dir.join("testdata").join(&name), &rollout)?;
        let Some(expected) = TABLE.iter().find(|e| e.phase == phase.as_deref()) else {
            continue;
        };
        health_tests.push(json!({
            "healthStatus": {"status": expected.argocd, "message": expected_message(phase.as_deref(), &rollout)},
            "inputPath": format!("testdata/{name}"),
        }));
        let result: Vec<Value> = (ACTIONS.iter())
            .map(|a| json!({"name": a, "disabled": !expected.actions.contains(a)}))
            .collect();
        discovery_tests.push(json!({"inputPath": format!("../testdata/{name}"), "result": result}));
        for action in expected.actions {
            let out = format!("testdata/{}-{action}.yaml", name.trim_end_matches(".yaml"));
            write_yaml(&dir.join("actions").join(&out), &acted(&rollout, action))?;
            action_tests
                .push(json!({"action": action, "inputPath": format!("../testdata/{name}"), "expectedOutputPath": out}));
        }
    }
    write_yaml(&dir.join("health_test.yaml"), &json!({"tests": health_tests}))?;
    let actions = json!({"discoveryTests": discovery_tests, "actionTests": action_tests});
    write_yaml(&dir.join("actions/action_test.yaml"), &actions)
}

/// The fixtures in `testdata/`, by the phase of each.
pub fn fixtures(dir: &Path) -> Result<BTreeMap<Option<String>, Value>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("testdata"))? {
        let text = std::fs::read_to_string(entry?.path())?;
        let rollout: Value = serde_saphyr::from_str(&text)?;
        out.insert(phase_of(&rollout), rollout);
    }
    Ok(out)
}

/// Argo CD's `argocd-cm` entries for weir's customization, from its Lua files: what the
/// README tells an Argo CD admin to merge (`config/argocd/argocd-cm.yaml`).
pub fn argocd_cm(dir: &Path) -> Result<String> {
    let lua = |path: &str, indent: usize| -> Result<String> {
        let text = std::fs::read_to_string(dir.join(path))?;
        let pad = " ".repeat(indent);
        Ok(text
            .lines()
            .map(|l| {
                if l.is_empty() {
                    "\n".to_string()
                } else {
                    format!("{pad}{l}\n")
                }
            })
            .collect())
    };
    let mut out = String::from(
        "# Generated from config/argocd/weir.dev/Rollout by tests/gitops.rs (WEIR_BLESS=1 rewrites it).\n\
         # Merge into Argo CD's argocd-cm:\n\
         #   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm.yaml\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\ndata:\n\
         \x20 resource.customizations.health.weir.dev_Rollout: |\n",
    );
    out += &lua("health.lua", 4)?;
    out += "  resource.customizations.actions.weir.dev_Rollout: |\n    discovery.lua: |\n";
    out += &lua("actions/discovery.lua", 6)?;
    out += "    definitions:\n";
    for action in ACTIONS {
        out += &format!("      - name: {action}\n        action.lua: |\n");
        out += &lua(&format!("actions/{action}/action.lua"), 10)?;
    }
    Ok(out)
}

/// The message Argo CD shows: weir's own `status.message`, or what health.lua says
/// before weir's first status.
fn expected_message(phase: Option<&str>, rollout: &Value) -> String {
    match phase {
        None => "waiting for weir to take the Deployment over".into(),
        Some(_) => rollout["status"]["message"].as_str().unwrap_or_default().into(),
    }
}

/// The Lua actions' fixed clock (2026-01-01T00:00:00Z), as `weir-gitops test` runs them.
const TEST_TIME: i64 = 1_767_225_600;

/// What an action does to a Rollout: the annotation `weir promote|abort|retry|pause|resume`
/// sets or removes.
pub fn acted(rollout: &Value, action: &str) -> Value {
    let mut out = rollout.clone();
    let rv = rollout["metadata"]["resourceVersion"].as_str().unwrap_or("nil");
    let annotations = &mut out["metadata"]["annotations"];
    if annotations.is_null() {
        *annotations = json!({});
    }
    let Some(annotations) = annotations.as_object_mut() else {
        return out;
    };
    match action {
        "pause" => {
            annotations.insert("weir.dev/paused".into(), "true".into());
        }
        "resume" => {
            annotations.remove("weir.dev/paused");
        }
        verb => {
            let request = format!("{verb}/{TEST_TIME}-{rv}");
            annotations.insert("weir.dev/request".into(), request.into());
        }
    }
    out
}

fn write_yaml(path: &Path, value: &Value) -> Result<()> {
    let text = serde_saphyr::to_string(value).map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
    Ok(std::fs::write(path, text)?)
}

/// `TABLE` as the README shows it.
pub fn phase_table() -> String {
    let mut out = String::from(
        "| phase | `Ready` / `Reconciling` / `Stalled` | kstatus (Flux) | Argo CD health | Argo CD actions enabled |\n\
         |---|---|---|---|---|\n",
    );
    for e in TABLE {
        let conditions = match e.kstatus {
            "Current" if e.phase.is_none() => "none yet",
            "Current" => "Ready",
            "Failed" => "Stalled",
            _ => "Reconciling",
        };
        let actions = match e.actions {
            [] => "none".to_string(),
            some => some.join(", "),
        };
        let phase = e.phase.map(|p| format!("`{p}`")).unwrap_or("(no status yet)".into());
        out += &format!(
            "| {phase} | {conditions} | {} | {} | {actions} |\n",
            e.kstatus, e.argocd
        );
    }
    out
}
