//! The shape of the code, checked: the rooms of `src/` import one way, the core has no
//! import cycle, long functions say why they are long, and the README's map of the code
//! is generated from the modules' own first lines (`WEIR_BLESS=1` rewrites it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The text of a file before its unit tests.
fn product_part(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The code of a file before its unit tests, without its comments.
fn code_of(path: &Path) -> String {
    let text = product_part(path);
    let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
    code.collect::<Vec<_>>().join("\n")
}

/// `src/<room>/...` → the room; a file at the top of `src/` is the shared floor.
fn room_of(path: &Path) -> &'static str {
    let relative = path.strip_prefix(root().join("src")).unwrap();
    match relative.components().next().and_then(|c| c.as_os_str().to_str()) {
        Some("cli") => "cli",
        Some("controller") => "controller",
        Some("edges") => "edges",
        Some("admin") => "admin",
        _ => "shared",
    }
}

#[test]
fn the_rooms_of_src_import_one_way() {
    // Who may use whom: cli → controller → edges → admin → shared → weir-core.
    let order = ["shared", "admin", "edges", "controller", "cli"];
    let rank = |room: &str| order.iter().position(|r| *r == room).unwrap();
    let mut wrong = Vec::new();
    for path in rust_files(&root().join("src")) {
        let from = room_of(&path);
        let text = code_of(&path);
        for to in ["cli", "controller", "edges", "admin"] {
            if text.contains(&format!("crate::{to}::")) && rank(to) > rank(from) {
                wrong.push(format!("{} ({from}) uses crate::{to}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the arrows:\n{}", wrong.join("\n"));
}

#[test]
fn the_core_has_no_import_cycle() {
    let src = root().join("crates/core/src");
    // Top-level modules of the core and whom each uses.
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = code_of(&path);
        let entry = uses.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name != module && !name.is_empty() {
                entry.insert(name);
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for next in uses.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    for module in uses.keys() {
        let cycle = visit(module, &uses, &mut Vec::new(), &mut BTreeSet::new());
        assert!(
            cycle.is_none(),
            "import cycle in weir-core: {}",
            cycle.unwrap().join(" → ")
        );
    }
}

/// Functions of product code (not tests) longer than this say why, in a comment line
/// starting `// Long:` right above them (or in their doc).
const LONG: usize = 60;

#[test]
fn long_functions_say_why() {
    let mut unexplained = Vec::new();
    for dir in ["src", "crates/core/src"] {
        for path in rust_files(&root().join(dir)) {
            let text = product_part(&path);
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let trimmed = line.trim_start();
                let is_fn = [
                    "fn ",
                    "pub fn ",
                    "pub(super) fn ",
                    "pub(crate) fn ",
                    "async fn ",
                    "pub async fn ",
                ]
                .iter()
                .chain(&["pub(super) async fn ", "pub(crate) async fn ", "const fn "])
                .any(|p| trimmed.starts_with(p));
                if !is_fn || line.trim_end().ends_with(';') {
                    continue;
                }
                let indent = line.len() - trimmed.len();
                let close = format!("{}}}", " ".repeat(indent));
                let Some(len) = lines[i..].iter().position(|l| l.trim_end() == close) else {
                    continue;
                };
                let explained = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.trim_start().starts_with("//") || l.trim_start().starts_with("#["))
                    .any(|l| l.trim_start().starts_with("// Long:") || l.trim_start().starts_with("/// Long:"));
                if len + 1 > LONG && !explained {
                    let name = trimmed.split('(').next().unwrap_or(trimmed);
                    unexplained.push(format!("{}:{} {name} ({} lines)", path.display(), i + 1, len + 1));
                }
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "functions over {LONG} lines without a `// Long:` comment saying why:\n{}",
        unexplained.join("\n")
    );
}

/// The first sentence of a module's `//!` doc.
fn first_sentence(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .take_while(|l| !l.is_empty())
        .collect();
    let joined = doc.join(" ");
    match joined.find(". ") {
        Some(i) => joined[..=i].to_string(),
        None => joined,
    }
}

/// The map of the code: every module of the core and the product, by room, with the
/// first sentence of its doc.
fn map_of_the_code() -> String {
    let mut out = String::from("| module | what it is |\n|---|---|\n");
    for dir in ["crates/core/src", "src"] {
        for path in rust_files(&root().join(dir)) {
            let shown = path.strip_prefix(root()).unwrap().display().to_string();
            let sentence = first_sentence(&path).replace('|', "\\|");
            out += &format!("| `{shown}` | {sentence} |\n");
        }
    }
    out
}

#[test]
fn the_readmes_map_of_the_code_is_generated_from_the_modules() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- map: generated by tests/architecture.rs -->\n", "<!-- /map -->");
    let start = readme.find(begin).expect("the map marker") + begin.len();
    let stop = start + readme[start..].find(end).expect("the end of the map");
    let map = map_of_the_code();
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&path, format!("{}{map}{}", &readme[..start], &readme[stop..])).unwrap();
        return;
    }
    assert_eq!(
        readme[start..stop],
        map,
        "run WEIR_BLESS=1 cargo test --test architecture to regenerate"
    );
}
