//! The `weir` binary as a person (or kubectl, as `kubectl weir`) runs it: namespace and
//! context from the kubeconfig like kubectl, against a loopback API server that records
//! what it was asked; shell completion.

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::Uri;

/// A stand-in API server answering every list of Rollouts with none; returns its URL
/// and the paths it was asked for.
async fn api_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .fallback(|State(asked): State<Arc<Mutex<Vec<String>>>>, uri: Uri| async move {
            asked.lock().unwrap().push(uri.path().to_string());
            r#"{"apiVersion":"weir.dev/v1alpha1","kind":"RolloutList","metadata":{"resourceVersion":"1"},"items":[]}"#
        })
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("config");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: team-a\n\
         clusters: [{{name: local, cluster: {{server: '{server}'}}}}]\n\
         users: [{{name: me, user: {{token: t}}}}]\n\
         contexts:\n\
         - {{name: team-a, context: {{cluster: local, user: me, namespace: team-a}}}}\n\
         - {{name: team-b, context: {{cluster: local, user: me, namespace: team-b}}}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary under the name kubectl gives a plugin, off the test's runtime.
async fn kubectl_weir(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let dir = config.parent().unwrap().to_path_buf();
    let plugin = dir.join("kubectl-weir");
    if !plugin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_weir"), &plugin).unwrap();
    }
    let mut command = Command::new(plugin);
    command
        .args(args)
        .env("KUBECONFIG", config)
        .env_remove("WEIR_NAMESPACE");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn get_takes_namespace_and_context_from_the_kubeconfig_like_kubectl() {
    let (server, asked) = api_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &server);
    let rollouts = |ns: &str| format!("/apis/weir.dev/v1alpha1/namespaces/{ns}/rollouts");

    let cases: [(&[&str], String); 4] = [
        (&["get"], rollouts("team-a")),
        (&["get", "--context", "team-b"], rollouts("team-b")),
        (&["get", "-n", "apps"], rollouts("apps")),
        (&["get", "-A"], "/apis/weir.dev/v1alpha1/rollouts".to_string()),
    ];
    for (args, path) in cases {
        let out = kubectl_weir(&config, args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout, "no Rollouts found\n", "{args:?}");
        assert_eq!(asked.lock().unwrap().pop().as_deref(), Some(path.as_str()), "{args:?}");
    }
}

#[tokio::test]
async fn completion_scripts_are_printed_for_the_common_shells() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    for shell in ["bash", "zsh", "fish"] {
        let out = kubectl_weir(&config, &["completion", shell]).await;
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("promote") && script.contains("get"),
            "{shell}: {script}"
        );
    }
}
