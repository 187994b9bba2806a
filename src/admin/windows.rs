//! The cluster admin's default release windows (`weir controller --release-windows
//! FILE`): for every Rollout that sets none of its own, the windows of its namespace, or
//! else the cluster's default. A Rollout's own `releaseWindows` always wins.
//!
//! ```yaml
//! default:                      # every namespace not listed below
//!   timeZone: Europe/Berlin
//!   start: ["Mon-Fri 01:00-05:00"]
//! namespaces:
//!   payments:
//!     timeZone: America/New_York
//!     promote: ["Mon-Thu 02:00-04:00"]
//!     freeze: ["2026-12-20/2027-01-03"]
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use weir_core::spec::{Problems, ReleaseWindows, RolloutSpec};
use weir_core::windows::Windows;

use crate::Error;

#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowDefaults {
    #[serde(default)]
    default: Option<ReleaseWindows>,
    #[serde(default)]
    namespaces: BTreeMap<String, ReleaseWindows>,
}

impl WindowDefaults {
    /// Reads the admin's file; refuses it whole, every problem named by its path.
    pub fn from_yaml(text: &str) -> Result<WindowDefaults, Error> {
        let defaults: WindowDefaults = crate::read_admin_file("release windows file", text)?;
        let mut errors = Problems::default();
        if let Some(w) = &defaults.default {
            Windows::parse("default", w, &mut errors);
        }
        for (ns, w) in &defaults.namespaces {
            Windows::parse(&format!("namespaces.{ns}"), w, &mut errors);
        }
        match errors.is_empty() {
            true => Ok(defaults),
            false => {
                let shown: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.problem)).collect();
                Err(Error::Usage(format!("release windows file: {}", shown.join("; "))))
            }
        }
    }

    /// The spec as the controller plans it: the admin's windows for its namespace when
    /// the Rollout has none of its own.
    pub fn apply<'a>(&self, namespace: &str, spec: &'a RolloutSpec) -> Cow<'a, RolloutSpec> {
        if spec.release_windows.is_some() {
            return Cow::Borrowed(spec);
        }
        match self.namespaces.get(namespace).or(self.default.as_ref()) {
            None => Cow::Borrowed(spec),
            Some(w) => {
                let mut spec = spec.clone();
                spec.release_windows = Some(w.clone());
                Cow::Owned(spec)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
default:
  start: ["Mon-Fri 01:00-05:00"]
namespaces:
  payments:
    timeZone: America/New_York
    promote: ["Mon-Thu 02:00-04:00"]
"#;

    fn spec(windows: Option<ReleaseWindows>) -> RolloutSpec {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev/40-rollout.yaml")).unwrap();
        let rollout: crate::api::Rollout = serde_saphyr::from_str(&text).unwrap();
        let mut spec = rollout.spec.0;
        spec.release_windows = windows;
        spec
    }

    #[test]
    fn a_rollout_gets_its_namespaces_windows_or_the_default_unless_it_has_its_own() {
        let d = WindowDefaults::from_yaml(FILE).unwrap();
        let zone = |ns: &str, s: &RolloutSpec| {
            d.apply(ns, s)
                .release_windows
                .clone()
                .map(|w| (w.time_zone, w.start, w.promote))
        };
        let plain = spec(None);
        assert_eq!(
            zone("payments", &plain),
            Some((
                Some("America/New_York".into()),
                vec![],
                vec!["Mon-Thu 02:00-04:00".into()]
            ))
        );
        assert_eq!(
            zone("dev", &plain),
            Some((None, vec!["Mon-Fri 01:00-05:00".into()], vec![]))
        );
        let own = spec(Some(ReleaseWindows {
            start: vec!["daily".into()],
            ..Default::default()
        }));
        assert_eq!(zone("payments", &own), Some((None, vec!["daily".into()], vec![])));
        assert_eq!(WindowDefaults::default().apply("dev", &plain).release_windows, None);
    }

    #[test]
    fn the_file_in_config_reads() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/base/15-providers.yaml")).unwrap();
        let map: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let file = map["data"]["release-windows.yaml"].as_str().unwrap();
        assert_eq!(WindowDefaults::from_yaml(file).unwrap(), WindowDefaults::default());
    }

    #[test]
    fn a_wrong_file_is_refused_naming_the_field() {
        let err = |text: &str| WindowDefaults::from_yaml(text).unwrap_err().to_string();
        assert_eq!(
            err("namespaces: {payments: {start: ['Mon-Fri 1:00-05:00']}}"),
            "release windows file: namespaces.payments.start[0]: \"1:00\" is not a time such as 01:30 (HH:MM, 00:00 to 24:00)"
        );
        assert_eq!(
            err("defaults: {}"),
            "release windows file: defaults: unknown field `defaults`, expected `default` or `namespaces`"
        );
    }
}
