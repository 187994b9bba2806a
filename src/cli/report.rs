//! The morning report: what happened to Rollouts while nobody watched, read from the
//! release history each Rollout keeps in its status (Events expire after an hour).
//! `weir history NAME` shows one Rollout's releases; `weir report --since 12h [-A]`
//! every release that started or ended in the window, as a table a person reads in
//! ten seconds or as JSON for scripts.

use futures::TryStreamExt;
use jiff::Timestamp;
use kube::runtime::{reflector, watcher};
use kube::{Api, ResourceExt};
use serde::Serialize;
use weir_core::status::ReleaseRecord;

use crate::Error;
use crate::api::Rollout;

/// One release of one Rollout.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    pub namespace: String,
    pub rollout: String,
    #[serde(flatten)]
    pub release: ReleaseRecord,
}

/// A Rollout's releases, the one in progress first, then the history, newest first.
pub fn releases(rollout: &Rollout) -> Vec<ReportRow> {
    let status = rollout.status.clone().unwrap_or_default();
    let row = |release: ReleaseRecord| ReportRow {
        namespace: rollout.namespace().unwrap_or_default(),
        rollout: rollout.name_any(),
        release,
    };
    let current = status.release.map(|mut r| {
        r.outcome = Some("InProgress".into());
        r.evidence = status.message.clone();
        r
    });
    current.into_iter().chain(status.history).map(row).collect()
}

/// The releases of `rollouts` that started or ended at or after `since`, newest first.
pub fn since(rollouts: &[Rollout], since: Timestamp) -> Vec<ReportRow> {
    let recent = |t: Option<&str>| t.and_then(|t| t.parse::<Timestamp>().ok()).is_some_and(|t| t >= since);
    let mut rows: Vec<ReportRow> = rollouts
        .iter()
        .flat_map(releases)
        .filter(|r| {
            r.release.outcome.as_deref() == Some("InProgress")
                || recent(Some(&r.release.started))
                || recent(r.release.ended.as_deref())
        })
        .collect();
    rows.sort_by(|a, b| b.release.started.cmp(&a.release.started));
    rows
}

/// "2026-11-28 03:12" from an RFC 3339 timestamp, in UTC; "-" when absent.
fn short(t: Option<&str>) -> String {
    match t.and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M").to_string(),
        None => "-".into(),
    }
}

/// The table: one line per release, outcome first so the eye finds rollbacks.
pub fn table(rows: &[ReportRow], with_namespace: bool) -> String {
    if rows.is_empty() {
        return "no releases in this window\n".into();
    }
    let head = [
        "OUTCOME",
        "ROLLOUT",
        "REVISION",
        "IMAGE",
        "STARTED (UTC)",
        "ENDED (UTC)",
        "STEP",
        "EVIDENCE",
    ];
    let lines: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let name = match with_namespace {
                true => format!("{}/{}", r.namespace, r.rollout),
                false => r.rollout.clone(),
            };
            [
                r.release.outcome.clone().unwrap_or_default(),
                name,
                r.release.revision.clone(),
                r.release.image.clone().unwrap_or_else(|| "-".into()),
                short(Some(&r.release.started)),
                short(r.release.ended.as_deref()),
                r.release.step.to_string(),
                r.release.evidence.clone(),
            ]
        })
        .collect();
    columns(&head.map(String::from), &lines)
}

/// Lines of cells aligned under `head`; the last column runs free (it holds sentences).
fn columns<const N: usize>(head: &[String; N], lines: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N.saturating_sub(1))
        .map(|i| {
            lines
                .iter()
                .chain([head])
                .filter_map(|l| l.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for cells in std::iter::once(head).chain(lines) {
        for (cell, w) in cells.iter().zip(&widths) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(cells.last().map(String::as_str).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// `weir get`: one line per Rollout, as `kubectl get` shows pods.
pub fn get_table(rollouts: &[Rollout], with_namespace: bool) -> String {
    if rollouts.is_empty() {
        return "no Rollouts found\n".into();
    }
    let (head, lines) = get_rows(rollouts, with_namespace);
    columns(&head, &lines)
}

/// The head and the lines of `weir get` (the dashboard shows the same), sorted by name.
pub fn get_rows(rollouts: &[Rollout], with_namespace: bool) -> ([String; 6], Vec<[String; 6]>) {
    let head = ["NAME", "PHASE", "STEP", "CANARY", "VERDICT", "MESSAGE"].map(String::from);
    let mut lines: Vec<[String; 6]> = rollouts
        .iter()
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            let name = match with_namespace {
                true => format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()),
                false => r.name_any(),
            };
            let verdict = status.analysis.as_ref().and_then(|a| a.last_verdict.clone());
            [
                name,
                format!("{:?}", status.phase),
                status.step_display.clone().unwrap_or_else(|| "-".into()),
                format!("{}%", status.canary_weight),
                verdict.unwrap_or_else(|| "-".into()),
                status.message,
            ]
        })
        .collect();
    lines.sort();
    (head, lines)
}

/// Prints the table of `api`'s Rollouts (only `names`, when given); with `watch`, again
/// whenever it changes, from a watch of the Rollouts (no polling).
pub async fn get(api: Api<Rollout>, names: &[String], with_namespace: bool, watch: bool) -> Result<(), Error> {
    let wanted = |r: &Rollout| names.is_empty() || names.contains(&r.name_any());
    if !watch {
        let all = api.list(&Default::default()).await?.items;
        let shown: Vec<Rollout> = all.into_iter().filter(wanted).collect();
        print!("{}", get_table(&shown, with_namespace));
        return Ok(());
    }
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()));
    let mut stream = std::pin::pin!(stream);
    let mut last = String::new();
    while let Some(event) = stream
        .try_next()
        .await
        .map_err(|e| Error::Usage(format!("watching Rollouts: {e}")))?
    {
        if matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
            continue;
        }
        let shown: Vec<Rollout> = store.state().iter().map(|r| (**r).clone()).filter(wanted).collect();
        let table = get_table(&shown, with_namespace);
        if table != last {
            println!("{table}");
            last = table;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(ns: &str, name: &str, status: serde_json::Value) -> Rollout {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev/40-rollout.yaml")).unwrap();
        let mut r: Rollout = serde_saphyr::from_str(&text).unwrap();
        r.metadata.namespace = Some(ns.into());
        r.metadata.name = Some(name.into());
        r.status = Some(serde_json::from_value(status).unwrap());
        r
    }

    fn night() -> Vec<Rollout> {
        vec![
            rollout(
                "shop",
                "backend",
                serde_json::json!({
                    "phase": "RolledBack", "message": "rolled back", "canaryWeight": 0,
                    "history": [
                        {"revision": "7f3a", "image": "shop/backend:2.4", "started": "2026-11-28T02:00:00Z",
                         "ended": "2026-11-28T02:07:00Z", "outcome": "RolledBack", "step": 2,
                         "evidence": "rolled back at step 2 (25%): request-success-rate 94.000 vs >= 99%: canary is worse than 1.2x baseline"},
                        {"revision": "19c2", "image": "shop/backend:2.3", "started": "2026-11-20T02:00:00Z",
                         "ended": "2026-11-20T02:30:00Z", "outcome": "Promoted", "step": 4, "evidence": "promoted after 4 steps"}
                    ]
                }),
            ),
            rollout(
                "pay",
                "api",
                serde_json::json!({
                    "phase": "Progressing", "message": "step 4/4 passed: outside the release windows to promote", "canaryWeight": 100,
                    "release": {"revision": "aa01", "image": "pay/api:9", "started": "2026-11-28T01:10:00Z", "step": 4}
                }),
            ),
        ]
    }

    #[test]
    fn the_report_lists_the_nights_releases_newest_first() {
        let rows = since(&night(), "2026-11-27T20:00:00Z".parse().unwrap());
        let outcomes: Vec<_> = rows.iter().map(|r| r.release.outcome.clone().unwrap()).collect();
        assert_eq!(
            outcomes,
            ["RolledBack", "InProgress"],
            "last week's promotion is left out"
        );
        let text = table(&rows, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("OUTCOME     ROLLOUT       REVISION  IMAGE"),
            "{text}"
        );
        assert!(lines[1].starts_with("RolledBack  shop/backend  7f3a      shop/backend:2.4  2026-11-28 02:00  2026-11-28 02:07  2     rolled back at step 2"), "{text}");
        assert!(lines[2].contains("outside the release windows to promote"), "{text}");
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["namespace"], "shop");
        assert_eq!(json[0]["outcome"], "RolledBack");
        assert_eq!(json[0]["image"], "shop/backend:2.4");
    }

    #[test]
    fn history_is_the_release_in_progress_then_the_past() {
        let rows = releases(&night()[0]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].release.outcome.as_deref(), Some("Promoted"));
        assert_eq!(table(&[], false), "no releases in this window\n");
    }

    #[test]
    fn get_shows_one_line_per_rollout_with_phase_step_weight_and_verdict() {
        let mut rollouts = night();
        if let Some(status) = rollouts[1].status.as_mut() {
            status.step_display = Some("4/4".into());
            status.analysis = Some(weir_core::status::AnalysisStatus {
                last_verdict: Some("Pass".into()),
                ..Default::default()
            });
        }
        let text = get_table(&rollouts, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("NAME          PHASE        STEP  CANARY  VERDICT  MESSAGE"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("pay/api       Progressing  4/4   100%    Pass     step 4/4 passed"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("shop/backend  RolledBack   -     0%      -        rolled back"),
            "{text}"
        );
        assert_eq!(get_table(&[], false), "no Rollouts found\n");
    }
}
