//! Real servers for tests: a Prometheus from Debian's package on a free loopback port
//! with a temporary data dir, killed and cleaned up on drop (also when a test panics).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn find_binary(name: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("{name} is not installed: run the README's test command (make test), which installs it with apt-get")
    })
}

pub struct PrometheusServer {
    child: Child,
    _dir: tempfile::TempDir,
    pub address: String,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (host:port) every second.
    pub fn start(targets: &[String]) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: mesh\n    static_configs:\n      - targets: [{}]\n",
            targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(find_binary("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let server = PrometheusServer {
            child,
            _dir: dir,
            address: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready(Duration::from_secs(20));
        server
    }

    fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        let url = format!("{}/-/ready", self.address);
        while start.elapsed() < limit {
            if let Ok(r) = http_probe::get_ok(&url)
                && r
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Prometheus not ready within {limit:?}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

mod http_probe {
    /// A readiness probe without pulling in reqwest's blocking client.
    pub fn get_ok(url: &str) -> std::io::Result<bool> {
        use std::io::{Read, Write};
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
        write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        Ok(buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200"))
    }
}
