//! The Istio CRDs the tests install (testcluster/istio-crds.yaml) type every field weir
//! reads and writes exactly as Istio's own generated CRDs do. What Istio's CRDs say of
//! those fields is committed (testcluster/istio-reference-facts.yaml), so the comparison
//! always runs; where Istio's CRDs themselves are at hand (../shared/istio/
//! networking-crds.yaml, or $WEIR_ISTIO_REFERENCE_CRDS) the committed facts are checked
//! against them too, and rewritten with WEIR_BLESS=1.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn load(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn ours() -> Vec<Value> {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testcluster/istio-crds.yaml"))
}

fn reference() -> Option<Vec<Value>> {
    let path = std::env::var_os("WEIR_ISTIO_REFERENCE_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/istio/networking-crds.yaml"));
    path.exists().then(|| load(&path))
}

fn crd<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

fn version<'a>(crd: &'a Value, v: &str) -> &'a Value {
    crd["spec"]["versions"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|x| x["name"].as_str() == Some(v))
        .unwrap_or_else(|| panic!("no version {v}"))
}

/// Follows a path of property names through a schema (`[]` steps into array items).
fn at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut cur = &schema["openAPIV3Schema"];
    for part in path.split('.') {
        cur = match part {
            "[]" => &cur["items"],
            "additionalProperties" => &cur["additionalProperties"],
            _ => &cur["properties"][part],
        };
    }
    cur
}

const TYPED: [(&str, &[&str]); 2] = [
    (
        "virtualservices.networking.istio.io",
        &[
            "spec.http",
            "spec.http.[].name",
            "spec.http.[].route",
            "spec.http.[].route.[].weight",
            "spec.http.[].route.[].destination",
            "spec.http.[].route.[].destination.host",
            "spec.http.[].route.[].destination.subset",
            "spec.http.[].route.[].destination.port.number",
            "spec.hosts",
        ],
    ),
    (
        "destinationrules.networking.istio.io",
        &[
            "spec.host",
            "spec.subsets",
            "spec.subsets.[].name",
            "spec.subsets.[].labels",
            "spec.subsets.[].labels.additionalProperties",
        ],
    ),
];

fn facts(v: &Value) -> Vec<(String, Value)> {
    ["type", "format", "minimum", "maximum", "required"]
        .iter()
        .filter(|k| !v[**k].is_null())
        .map(|k| (k.to_string(), v[*k].clone()))
        .collect()
}

#[test]
fn typed_fields_are_typed_and_everything_else_is_preserved() {
    let docs = ours();
    for (name, paths) in TYPED {
        for v in ["v1", "v1beta1"] {
            let schema = &version(crd(&docs, name), v)["schema"];
            for path in paths {
                let f = at(schema, path);
                assert!(!f["type"].is_null(), "{name} {v}: {path} is not typed");
            }
            assert_eq!(
                at(schema, "spec")["x-kubernetes-preserve-unknown-fields"],
                Value::Bool(true),
                "{name}: unknown spec fields must survive"
            );
        }
    }
}

/// Per CRD: the served versions, and per version and typed path, the schema's facts.
fn digest(docs: &[Value]) -> Value {
    let mut out = serde_yaml::Mapping::new();
    for (name, paths) in TYPED {
        let mut served: Vec<String> = crd(docs, name)["spec"]["versions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        served.sort();
        let mut entry = serde_yaml::Mapping::new();
        entry.insert("served".into(), serde_yaml::to_value(&served).unwrap());
        for v in ["v1", "v1beta1"] {
            let schema = &version(crd(docs, name), v)["schema"];
            let mut fields = serde_yaml::Mapping::new();
            for path in paths {
                let facts: serde_yaml::Mapping = facts(at(schema, path))
                    .into_iter()
                    .map(|(k, v)| (k.into(), v))
                    .collect();
                fields.insert((*path).into(), Value::Mapping(facts));
            }
            entry.insert(v.into(), Value::Mapping(fields));
        }
        out.insert((*name).into(), Value::Mapping(entry));
    }
    Value::Mapping(out)
}

fn committed_facts_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testcluster/istio-reference-facts.yaml")
}

#[test]
fn typed_fields_match_istios_own_crds() {
    let committed: Value = serde_yaml::from_str(&std::fs::read_to_string(committed_facts_path()).unwrap()).unwrap();
    assert_eq!(
        digest(&ours()),
        committed,
        "our Istio CRDs against Istio's (committed facts)"
    );
}

#[test]
fn the_committed_facts_are_istios_where_istios_crds_are_at_hand() {
    let Some(reference) = reference() else {
        // Nothing to re-derive from here; the comparison above ran on the committed facts.
        return;
    };
    let facts = digest(&reference);
    if std::env::var_os("WEIR_BLESS").is_some() {
        let text = format!(
            "# What Istio's own CRDs say of the fields weir reads and writes, derived from\n# ../shared/istio/networking-crds.yaml by tests/istio_crds.rs (WEIR_BLESS=1).\n{}",
            serde_yaml::to_string(&facts).unwrap()
        );
        std::fs::write(committed_facts_path(), text).unwrap();
    }
    let committed: Value = serde_yaml::from_str(&std::fs::read_to_string(committed_facts_path()).unwrap()).unwrap();
    assert_eq!(
        facts, committed,
        "testcluster/istio-reference-facts.yaml is stale: run with WEIR_BLESS=1"
    );
}
