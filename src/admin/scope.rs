//! Which namespaces may use something the admin declared (a provider, a metric template,
//! a receiver, an allowed webhook address): `namespaces:` on its entry, a list of names
//! or of prefixes ending in `*` (`team-a-*`). No list: every namespace, as before scopes
//! existed; an empty list: none (declared, not yet handed out).
//!
//! A list rather than a label selector on Namespaces: the admin's file is then the
//! whole truth (a tenant who may label its own namespace cannot widen its reach), and
//! weir need not watch Namespaces to decide.

use serde::Deserialize;

use crate::Error;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Scope(Option<Vec<String>>);

impl Scope {
    /// Every namespace.
    pub fn everywhere() -> Scope {
        Scope(None)
    }

    /// No namespace.
    pub fn nowhere() -> Scope {
        Scope(Some(Vec::new()))
    }

    /// Refuses a pattern that is neither a namespace name nor a prefix with `*` at its end.
    pub fn check(&self, at: &str) -> Result<(), Error> {
        for (i, pattern) in self.0.iter().flatten().enumerate() {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            let prefix_ok = pattern.ends_with('*')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !(prefix_ok || crate::plan::is_object_name(name)) || name.contains('*') {
                return Err(Error::Usage(format!(
                    "{at}.namespaces[{i}]: {pattern:?} is not a namespace name or a prefix ending in '*'"
                )));
            }
        }
        Ok(())
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match &self.0 {
            None => true,
            Some(patterns) => patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => namespace.starts_with(prefix),
                None => namespace == p,
            }),
        }
    }

    /// For an error message: who may use it.
    pub fn describe(&self) -> String {
        match &self.0 {
            None => "every namespace".into(),
            Some(p) if p.is_empty() => "no namespace".into(),
            Some(p) => format!("namespaces {}", p.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_names_or_prefixes() {
        let scope: Scope = serde_json::from_str(r#"["payments", "team-a-*"]"#).unwrap();
        assert!(scope.allows("payments") && scope.allows("team-a-web"));
        assert!(!scope.allows("payments-2") && !scope.allows("team-b"));
        assert!(Scope::everywhere().allows("anything"));
        let none: Scope = serde_json::from_str("[]").unwrap();
        assert!(!none.allows("payments"));
        let wrong: Scope = serde_json::from_str(r#"["a*b"]"#).unwrap();
        assert!(
            wrong
                .check("providers[0]")
                .unwrap_err()
                .to_string()
                .contains("providers[0].namespaces[0]")
        );
    }
}
