//! `make image` (image/build.sh) without a container engine: the OCI image archive it
//! writes is unpacked here as a runtime would — index, manifest, config, layer — and the
//! `weir` binary from the layer runs (`weir --version`). The test builds the image from
//! the test build's binary (dynamically linked, so it runs here but not from scratch);
//! `make image` itself builds a static release binary and refuses a dynamic one.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The archive's files by name.
fn entries(archive: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut files = std::collections::BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    files
}

fn blob(files: &std::collections::BTreeMap<String, Vec<u8>>, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().unwrap();
    let path = format!("blobs/{}", digest.replace(':', "/"));
    files
        .get(&path)
        .unwrap_or_else(|| panic!("{path} not in the archive"))
        .clone()
}

#[test]
fn the_image_archive_unpacks_and_its_weir_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weir.oci.tar");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = Command::new("bash")
        .arg(repo.join("image/build.sh"))
        .env("WEIR_BINARY", env!("CARGO_BIN_EXE_weir"))
        .env("WEIR_IMAGE_OUT", &out)
        .output()
        .expect("image/build.sh");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let files = entries(&out);
    let layout: Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let image = &index["manifests"][0];
    assert_eq!(image["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let name = image["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap();
    assert!(name.starts_with("ghcr.io/weir-dev/weir:"), "{name}");
    let manifest: Value = serde_json::from_slice(&blob(&files, image)).unwrap();
    let config: Value = serde_json::from_slice(&blob(&files, &manifest["config"])).unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["User"], "65532:65532", "runs as non-root");
    assert_eq!(config["config"]["Entrypoint"][0], "/weir");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: the binary");
    let layer = blob(&files, &layers[0]);
    let mut unpacked = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let root = dir.path().join("rootfs");
    unpacked.unpack(&root).unwrap();
    let listed: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, ["weir"], "nothing but the binary");
    let version = Command::new(root.join("weir")).arg("--version").output().unwrap();
    assert!(version.status.success());
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.starts_with("weir "), "{text}");
}

#[test]
fn the_krew_manifest_names_the_archive_by_its_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = Command::new("bash")
        .arg(repo.join("image/krew.sh"))
        .env("WEIR_BINARY", env!("CARGO_BIN_EXE_weir"))
        .env("WEIR_KREW_OUT", dir.path())
        .env("RELEASE_URL", "https://releases.example/weir/v1")
        .output()
        .expect("image/krew.sh");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.path().join("weir.yaml")).unwrap()).unwrap();
    assert_eq!(manifest["kind"].as_str(), Some("Plugin"));
    assert_eq!(manifest["metadata"]["name"].as_str(), Some("weir"));
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["spec"]["version"].as_str(), Some(version.as_str()));
    let platform = &manifest["spec"]["platforms"][0];
    let name = format!("weir-{version}-linux-amd64.tar.gz");
    assert_eq!(
        platform["uri"].as_str(),
        Some(format!("https://releases.example/weir/v1/{name}").as_str())
    );
    let archive = std::fs::read(dir.path().join(&name)).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &archive);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(platform["sha256"].as_str(), Some(hex.as_str()));
    assert_eq!(platform["bin"].as_str(), Some("weir"));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive.as_slice()));
    tar.unpack(dir.path().join("plugin")).unwrap();
    let version = Command::new(dir.path().join("plugin/weir"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("weir "));
}
