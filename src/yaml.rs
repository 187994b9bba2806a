//! The one way weir reads YAML: a Rollout in `weir validate`, the cluster admin's files.
//!
//! serde-saphyr, not serde_yaml (deprecated, unmaintained since 2024): it is maintained
//! and enforces resource budgets in the parser itself — nesting depth (block and flow
//! alike, whatever quotes or comments surround them), aliases and anchors, events,
//! documents — so no text heuristic stands before it. A Rollout is small; the budget is
//! a few times what the largest real one needs, and a 1 MiB hostile file is refused in
//! milliseconds (`cargo bench --bench validate`).

use serde::de::DeserializeOwned;

/// Larger than any Rollout the API server stores (etcd's 1.5 MB object limit is for the
/// whole object).
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Deeper than any Rollout or admin file nests, block and flow together.
pub const MAX_DEPTH: usize = 64;

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            // A Rollout has a few hundred nodes; a multi-document manifest some thousands.
            max_aliases: 100,
            max_anchors: 100,
            max_recorded_anchor_events: 10_000,
            max_documents: 1_000,
            max_events: 100_000,
            max_nodes: 25_000,
            max_total_scalar_bytes: MAX_FILE_BYTES,
            max_merge_keys: 100,
        },
    }
}

fn too_big(text: &str) -> Option<String> {
    (text.len() > MAX_FILE_BYTES).then(|| format!("not YAML weir reads: larger than {MAX_FILE_BYTES} bytes"))
}

/// Every document of a (multi-document) text, as JSON values. The error is one line
/// that starts with "not YAML".
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    if let Some(problem) = too_big(text) {
        return Err(problem);
    }
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| not_yaml(&e))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// One document into `T`; a field that does not fit is named by its path.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    if let Some(problem) = too_big(text) {
        return Err(problem);
    }
    let value: serde_json::Value = serde_saphyr::from_str_with_options(text, options()).map_err(|e| not_yaml(&e))?;
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// The parser's error on one line (its report spans several, with a snippet).
fn not_yaml(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
    format!("not YAML: {first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_bounded_by_the_parser_whatever_quotes_and_comments_say() {
        // An apostrophe in a comment fooled the old text check into seeing no nesting.
        let deep = format!("# it's a trap\nspec: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(documents(&deep).unwrap_err().starts_with("not YAML"));
        let block: String = (0..100).map(|i| format!("{}k{i}:\n", "  ".repeat(i))).collect();
        assert!(documents(&block).unwrap_err().starts_with("not YAML"));
        let fine = "a: {b: [1, 2, {c: 'it''s'}]}  # it's fine\n---\nd: 1\n";
        assert_eq!(documents(fine).unwrap().len(), 2);
    }

    #[test]
    fn a_field_that_does_not_fit_is_named_by_its_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct File {
            items: Vec<Item>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Item {
            weight: u32,
        }
        let e = from_str::<File>("items: [{weight: 1}, {weight: heavy}]").unwrap_err();
        assert!(e.starts_with("items[1].weight: invalid type"), "{e}");
    }
}
