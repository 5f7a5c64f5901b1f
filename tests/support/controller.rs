//! The controller binary as a separate process, exactly as deployed: it gets
//! the remote kubeconfig by flag and the internal one through `KUBECONFIG`.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::control_plane::{ControlPlane, repo_root};

/// A running controller; stopped when dropped. When the test is failing, the
/// end of its log is printed.
pub struct ControllerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
    /// Where this process's part of the (appended) log starts.
    log_start: u64,
}

/// How to start one controller.
pub struct ControllerOptions<'a> {
    pub binary: &'a Path,
    pub namespace: &'a str,
    pub policies: PathBuf,
    /// Label selector limiting which remote requests this controller serves.
    pub request_selector: Option<String>,
    /// Identity in the leader lease. A controller restarted with the same
    /// identity, as a container restarted in its pod, leads again at once.
    pub identity: String,
    /// The remote clusters as `--remote NAME=KUBECONFIG`; empty means the
    /// plane's remote as `--remote-kubeconfig`.
    pub remotes: Vec<(String, PathBuf)>,
    /// Kubeconfig of the internal cluster (default: the plane's admin one).
    pub internal_kubeconfig: Option<PathBuf>,
    /// Log file name suffix, for several controllers in one namespace.
    pub log_suffix: String,
    /// `RUST_LOG` for the controller (default: `RUST_LOG` of this process,
    /// else debug logs of the controller itself).
    pub log_filter: Option<String>,
    pub extra_args: Vec<String>,
}

impl<'a> ControllerOptions<'a> {
    pub fn new(binary: &'a Path, namespace: &'a str) -> Self {
        Self {
            binary,
            namespace,
            policies: repo_root().join("policies"),
            request_selector: None,
            identity: format!("{namespace}-controller"),
            remotes: Vec::new(),
            internal_kubeconfig: None,
            log_suffix: String::new(),
            log_filter: None,
            extra_args: Vec::new(),
        }
    }
}

impl ControllerProcess {
    pub fn start(plane: &ControlPlane, options: ControllerOptions<'_>) -> Self {
        let log = plane.dir.join(format!(
            "controller-{}{}.log",
            options.namespace, options.log_suffix
        ));
        // Appended to, so that the logs of a restarted controller follow
        // those of the one before it.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("controller log");
        let supervisor = repo_root().join("tests/control-plane/supervise.sh");

        let mut command = Command::new(supervisor);
        command
            .arg("--")
            .arg(options.binary)
            .arg("run")
            .arg("--namespace")
            .arg(options.namespace)
            .arg("--policies")
            .arg(&options.policies)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--identity")
            .arg(&options.identity)
            .args(&options.extra_args)
            .env(
                "KUBECONFIG",
                options
                    .internal_kubeconfig
                    .as_ref()
                    .unwrap_or(&plane.internal.kubeconfig),
            )
            .env(
                "RUST_LOG",
                options.log_filter.clone().unwrap_or_else(|| {
                    std::env::var("RUST_LOG")
                        .unwrap_or_else(|_| "info,internal_services=debug".into())
                }),
            )
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        if let Some(selector) = &options.request_selector {
            command.arg("--request-selector").arg(selector);
        }
        if options.remotes.is_empty() {
            command
                .arg("--remote-kubeconfig")
                .arg(&plane.remote.kubeconfig);
        }
        for (name, kubeconfig) in &options.remotes {
            command
                .arg("--remote")
                .arg(format!("{name}={}", kubeconfig.display()));
        }

        let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
        let mut child = command.spawn().expect("start controller");
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            log,
            log_start,
        }
    }

    /// The address of the controller's `/metrics` and probes, read from its
    /// log once it serves them.
    pub async fn metrics_addr(&self) -> std::net::SocketAddr {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = self.own_log();
            let found = text
                .lines()
                .filter(|l| l.contains("serving metrics and probes"))
                .filter_map(|l| l.split("addr=").nth(1))
                .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
                .next_back();
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "controller never served metrics"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The controller's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        body
    }

    /// GETs `path` from the controller's probe server: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr().await;
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the probe server");
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the response");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("an HTTP status");
        (status, body.to_owned())
    }

    /// Waits until the log has a line containing `text`.
    pub async fn wait_for_log(&self, text: &str, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.own_log().contains(text) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {text:?} within {within:?}:\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Asks the controller to stop as Kubernetes does (SIGTERM) and waits.
    pub fn terminate(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        let _ = self.child.wait();
        drop(self.stdin.take());
    }

    /// The controller's own process id (not its supervisor's).
    pub fn pid(&self) -> u32 {
        self.pids()
            .first()
            .and_then(|p| p.parse().ok())
            .expect("controller process")
    }

    fn pids(&self) -> Vec<String> {
        let supervisor = self.child.id().to_string();
        let children = Command::new("pgrep")
            .args(["-P", &supervisor])
            .output()
            .expect("run pgrep");
        String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// This process's part of the log.
    fn own_log(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = (self.log_start as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// The last lines of the controller's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the controller process with SIGKILL, as the kernel's OOM killer
    /// or a node failure would: no signal handler, no cleanup.
    pub fn kill_hard(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        self.stop();
    }

    /// Stops the controller and waits for it.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- controller log ({}) ---\n{}",
                self.log.display(),
                self.log_tail(60)
            );
        }
        self.stop();
    }
}
