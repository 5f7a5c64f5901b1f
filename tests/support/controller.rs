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
}

/// How to start one controller.
pub struct ControllerOptions<'a> {
    pub binary: &'a Path,
    pub namespace: &'a str,
    pub policies: PathBuf,
    /// Label selector limiting which remote requests this controller serves.
    pub request_selector: Option<String>,
    pub extra_args: Vec<String>,
}

impl<'a> ControllerOptions<'a> {
    pub fn new(binary: &'a Path, namespace: &'a str) -> Self {
        Self {
            binary,
            namespace,
            policies: repo_root().join("policies"),
            request_selector: None,
            extra_args: Vec::new(),
        }
    }
}

impl ControllerProcess {
    pub fn start(plane: &ControlPlane, options: ControllerOptions<'_>) -> Self {
        let log = plane
            .dir
            .join(format!("controller-{}.log", options.namespace));
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
            .arg("--remote-kubeconfig")
            .arg(&plane.remote.kubeconfig)
            .arg("--namespace")
            .arg(options.namespace)
            .arg("--policies")
            .arg(&options.policies)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(&options.extra_args)
            .env("KUBECONFIG", &plane.internal.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,internal_services=debug".into()),
            )
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        if let Some(selector) = &options.request_selector {
            command.arg("--request-selector").arg(selector);
        }

        let mut child = command.spawn().expect("start controller");
        let stdin = child.stdin.take();
        Self { child, stdin, log }
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
        let supervisor = self.child.id().to_string();
        let children = Command::new("pgrep")
            .args(["-P", &supervisor])
            .output()
            .expect("run pgrep");
        let pids = String::from_utf8_lossy(&children.stdout).to_string();
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
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
