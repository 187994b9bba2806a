use std::process::ExitCode;

fn main() -> ExitCode {
    // glibc gives threads that allocate at once arenas of their own (up to 8 per core)
    // and keeps what they free there; two arenas are plenty for weir's few threads and
    // keep RSS close to what the caches hold (benches/scale.rs measures RSS).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; mallopt only sets a tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(weir::cli::main()),
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
