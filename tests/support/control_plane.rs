//! One etcd and two kube-apiservers ("remote" and "internal") on loopback.
//!
//! The binaries are built from the Go modules pinned in
//! `tests/control-plane/` (cached outside the repository). Every process runs
//! under `supervise.sh`, whose standard input is a pipe held by this process:
//! when the test binary exits for any reason the pipe closes and each server
//! is stopped by PID. The control plane starts once per test binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use kube::{Client, Config};
use serde::Deserialize;

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    pub name: &'static str,
    pub port: u16,
    pub kubeconfig: PathBuf,
}

impl ApiServer {
    /// A client authenticated as the cluster admin.
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }
}

/// The running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub remote: ApiServer,
    pub internal: ApiServer,
    etcd_port: u16,
    /// Whether the API servers write an audit log (`<name>-audit.log`).
    audit: bool,
    /// Write ends of the supervisors' pipes by process name; dropping them
    /// stops everything.
    guards: Mutex<Vec<(String, Child, ChildStdin)>>,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| {
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
                runtime.block_on(Self::start())
            })
            .join()
            .expect("control plane failed to start")
        })
    }

    /// Builds (if needed) and starts etcd and both API servers, then
    /// installs the CRDs each side needs.
    pub async fn start() -> ControlPlane {
        Self::start_with(false).await
    }

    /// Like [`ControlPlane::start`], with every API server writing an audit
    /// log of each request: who, which verb, which resource.
    pub async fn start_audited() -> ControlPlane {
        Self::start_with(true).await
    }

    async fn start_with(audit: bool) -> ControlPlane {
        let started = Instant::now();
        let bin = build_binaries();
        let dir = std::env::temp_dir().join(format!("internal-services-cp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state directory");
        write_pki(&dir);
        let token = write_tokens(&dir);
        std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).expect("audit policy");

        let mut guards = Vec::new();
        let keep = std::env::var_os("INTERNAL_SERVICES_KEEP_STATE").is_some();
        guards.push(named(
            "janitor",
            supervise(
                &dir,
                "janitor",
                &["sleep", "infinity"],
                (!keep).then_some(&dir),
            ),
        ));

        let etcd_port = free_port();
        guards.push(named("etcd", start_etcd(&dir, &bin, etcd_port)));

        let mut servers = Vec::new();
        for name in ["remote", "internal"] {
            let port = free_port();
            guards.push(named(
                name,
                start_apiserver(&dir, &bin, name, port, etcd_port, audit),
            ));
            let kubeconfig = dir.join(format!("{name}.kubeconfig"));
            write_kubeconfig(&kubeconfig, &dir.join("ca.crt"), port, &token);
            servers.push(ApiServer {
                name,
                port,
                kubeconfig,
            });
        }
        let internal = servers.pop().expect("internal");
        let remote = servers.pop().expect("remote");
        let plane = ControlPlane {
            dir,
            bin,
            remote,
            internal,
            etcd_port,
            audit,
            guards: Mutex::new(guards),
        };

        plane.wait_ready(&plane.remote).await;
        plane.wait_ready(&plane.internal).await;
        plane.install_crds().await;
        eprintln!(
            "control plane ready in {:.1}s: remote :{}, internal :{}, state in {}",
            started.elapsed().as_secs_f64(),
            plane.remote.port,
            plane.internal.port,
            plane.dir.display()
        );
        plane
    }

    /// Stops every process now (otherwise they stop when this process exits).
    pub fn stop(&self) {
        let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        for (_, mut child, stdin) in guards.drain(..).rev() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Stops the remote API server (etcd keeps its data).
    pub fn stop_remote(&self) {
        self.stop_server("remote");
    }

    /// Starts the remote API server again on its old port and waits until it
    /// serves.
    pub async fn start_remote(&self) {
        self.restart_server(&self.remote).await;
    }

    /// Starts one more remote API server, `name`, on the same etcd with its
    /// own prefix, with the InternalRequest CRD installed.
    pub async fn start_extra_remote(&self, name: &'static str) -> ApiServer {
        let port = free_port();
        let server = start_apiserver(&self.dir, &self.bin, name, port, self.etcd_port, self.audit);
        self.guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(named(name, server));
        let kubeconfig = self.dir.join(format!("{name}.kubeconfig"));
        write_kubeconfig(
            &kubeconfig,
            &self.dir.join("ca.crt"),
            port,
            &self.admin_token(),
        );
        let server = ApiServer {
            name,
            port,
            kubeconfig,
        };
        self.wait_ready(&server).await;
        let crd = repo_root().join("deploy/crds/remote/internalrequests.yaml");
        install_crd_files(&server.client().await, &[crd]).await;
        server
    }

    /// Stops the API server started as `name` (etcd keeps its data).
    pub fn stop_server(&self, name: &str) {
        let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = guards.iter().position(|(n, ..)| n == name) {
            let (_, mut child, stdin) = guards.remove(index);
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Starts the API server `server` again on its old port.
    pub async fn restart_server(&self, server: &ApiServer) {
        let process = start_apiserver(
            &self.dir,
            &self.bin,
            server.name,
            server.port,
            self.etcd_port,
            self.audit,
        );
        self.guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(named(server.name, process));
        self.wait_ready(server).await;
    }

    /// The kubectl built with the control plane.
    pub fn kubectl(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// A kubeconfig for `server` signed in with `token` (a ServiceAccount's).
    pub fn kubeconfig_with_token(&self, server: &ApiServer, file: &str, token: &str) -> PathBuf {
        let path = self.dir.join(file);
        write_kubeconfig(&path, &self.dir.join("ca.crt"), server.port, token);
        path
    }

    fn admin_token(&self) -> String {
        self.token_of("admin")
    }

    /// The bearer token of [`CONTROLLER_USER`].
    pub fn controller_token(&self) -> String {
        self.token_of(CONTROLLER_USER)
    }

    fn token_of(&self, user: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join("tokens.csv")).expect("tokens.csv");
        text.lines()
            .find_map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                (fields.get(1) == Some(&user)).then(|| fields[0].to_owned())
            })
            .unwrap_or_else(|| panic!("no token for {user}"))
    }

    async fn wait_ready(&self, server: &ApiServer) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let client = server.client().await;
            let namespaces: Api<Namespace> = Api::all(client);
            match namespaces.list(&ListParams::default().limit(1)).await {
                Ok(_) => return,
                Err(err) if Instant::now() > deadline => {
                    panic!(
                        "{} API server not ready after 120s: {err}; logs in {}",
                        server.name,
                        self.dir.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    async fn install_crds(&self) {
        let root = repo_root();
        let ours = root.join("deploy/crds");
        let remote = [ours.join("remote/internalrequests.yaml")];
        let internal = [
            ours.join("internal/internalservicesconfigs.yaml"),
            root.join("tests/crds/tekton.yaml"),
        ];
        install_crd_files(&self.remote.client().await, &remote).await;
        install_crd_files(&self.internal.client().await, &internal).await;
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn named(name: &str, (child, stdin): (Child, ChildStdin)) -> (String, Child, ChildStdin) {
    (name.to_owned(), child, stdin)
}

/// Runs `tests/control-plane/build.sh` and returns the binaries' directory.
fn build_binaries() -> PathBuf {
    let script = repo_root().join("tests/control-plane/build.sh");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/control-plane/build.sh");
    assert!(output.status.success(), "building the control plane failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh printed no directory")
            .trim(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

/// A CA, a serving certificate for 127.0.0.1 signed by it, and a
/// service-account signing key.
fn write_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?} failed");
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "7",
        "-subj",
        "/CN=internal-services-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "7",
        "-extfile",
        "server.ext",
    ]);
    run(&["genrsa", "-out", "sa.key", "2048"]);
}

/// Static bearer tokens; returns the admin's.
fn write_tokens(dir: &Path) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let token = format!("admin-{nanos:x}-{}", std::process::id());
    let controller = format!("controller-{nanos:x}-{}", std::process::id());
    std::fs::write(
        dir.join("tokens.csv"),
        format!(
            "{token},admin,admin,system:masters\n\
             {controller},{CONTROLLER_USER},controller,system:masters\n"
        ),
    )
    .expect("tokens");
    token
}

/// A second user with the admin's rights, so that the audit log tells the
/// controller's requests from everyone else's.
pub const CONTROLLER_USER: &str = "internal-services-controller";

/// Every request once, when its response is complete, without bodies.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
omitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n";

fn supervise(
    dir: &Path,
    name: &str,
    command: &[&str],
    remove_after: Option<&PathBuf>,
) -> (Child, ChildStdin) {
    let script = repo_root().join("tests/control-plane/supervise.sh");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let mut cmd = Command::new(script);
    if let Some(path) = remove_after {
        cmd.arg("--remove-after").arg(path);
    }
    let mut child = cmd
        .arg("--")
        .args(command)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("start {name}: {err}"));
    let stdin = child.stdin.take().expect("supervisor stdin");
    (child, stdin)
}

fn start_etcd(dir: &Path, bin: &Path, port: u16) -> (Child, ChildStdin) {
    let peer = free_port();
    let etcd = bin.join("etcd");
    let data = dir.join("etcd-data");
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args = [
        etcd.to_str().unwrap(),
        "--name=default",
        &format!("--data-dir={}", data.display()),
        &format!("--listen-client-urls={client_url}"),
        &format!("--advertise-client-urls={client_url}"),
        &format!("--listen-peer-urls={peer_url}"),
        &format!("--initial-advertise-peer-urls={peer_url}"),
        &format!("--initial-cluster=default={peer_url}"),
        "--unsafe-no-fsync",
        "--log-level=warn",
    ];
    supervise(dir, "etcd", &args, None)
}

fn start_apiserver(
    dir: &Path,
    bin: &Path,
    name: &str,
    port: u16,
    etcd_port: u16,
    audit: bool,
) -> (Child, ChildStdin) {
    let apiserver = bin.join("kube-apiserver");
    let path = |file: &str| dir.join(file).display().to_string();
    let args = [
        apiserver.to_str().unwrap().to_owned(),
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        format!("--etcd-prefix=/{name}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", path(&format!("{name}-certs"))),
        format!("--tls-cert-file={}", path("server.crt")),
        format!("--tls-private-key-file={}", path("server.key")),
        format!("--token-auth-file={}", path("tokens.csv")),
        "--authorization-mode=RBAC".to_owned(),
        format!("--service-account-issuer=https://127.0.0.1:{port}"),
        format!("--service-account-key-file={}", path("sa.key")),
        format!("--service-account-signing-key-file={}", path("sa.key")),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        "--endpoint-reconciler-type=none".to_owned(),
        "--disable-admission-plugins=ServiceAccount".to_owned(),
        "--profiling=false".to_owned(),
        "-v=1".to_owned(),
    ];
    let mut args = args.to_vec();
    if audit {
        args.push(format!("--audit-policy-file={}", path("audit-policy.yaml")));
        args.push(format!(
            "--audit-log-path={}",
            path(&format!("{name}-audit.log"))
        ));
        args.push("--audit-log-format=json".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    supervise(dir, &format!("{name}-apiserver"), &args, None)
}

fn write_kubeconfig(path: &Path, ca: &Path, port: u16, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
         certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  \
         context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
        ca = ca.display()
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Creates every CRD in the files and waits until each is Established and
/// its resource can be listed.
pub async fn install_crd_files(client: &Client, files: &[PathBuf]) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in files {
        let text = std::fs::read_to_string(file).expect("read CRD file");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let crd = CustomResourceDefinition::deserialize(document).expect("CRD YAML");
            let name = crd.metadata.name.clone().expect("CRD name");
            match crds.create(&PostParams::default(), &crd).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(err) => panic!("create CRD {name}: {err}"),
            }
            wait_established(client, &crds, &name).await;
        }
    }
}

async fn wait_established(client: &Client, crds: &Api<CustomResourceDefinition>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = crds.get(name).await.expect("read CRD");
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established && listable(client, &crd).await {
            return;
        }
        assert!(Instant::now() < deadline, "CRD {name} not usable after 60s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn listable(client: &Client, crd: &CustomResourceDefinition) -> bool {
    let version = &crd.spec.versions[0].name;
    let resource = ApiResource {
        group: crd.spec.group.clone(),
        version: version.clone(),
        api_version: format!("{}/{version}", crd.spec.group),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    api.list(&ListParams::default().limit(1)).await.is_ok()
}
