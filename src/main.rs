use kube::CustomResourceExt;
fn main() {
    print!("{}", serde_yaml::to_string(&weir::api::Rollout::crd()).unwrap());
}
