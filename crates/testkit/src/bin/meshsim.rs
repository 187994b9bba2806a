//! `meshsim`: the mesh traffic simulator on its own, against the current kubeconfig.
//!
//!   meshsim --config testcluster/mesh.yaml --listen 127.0.0.1:9901

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Stands in for Istio's sidecars: routes simulated requests by VirtualService weights, serves Istio metrics"
)]
struct Args {
    #[arg(long, default_value = "testcluster/mesh.yaml")]
    config: PathBuf,
    #[arg(long, default_value = "127.0.0.1:9901")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> Result<(), weir_testkit::Error> {
    let args = Args::parse();
    let config = weir_testkit::meshsim::MeshConfig::from_yaml(&std::fs::read_to_string(&args.config)?)?;
    let client = kube::Client::try_default().await?;
    let mesh = weir_testkit::meshsim::start(client, config, args.listen, args.seed).await?;
    eprintln!("meshsim: serving /metrics on http://{}", mesh.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
