use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    weir::cli::main().await
}
