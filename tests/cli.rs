//! The binary's offline commands, run as a user would run them.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn dry_run_on_the_examples_prints_three_decisions_and_fails() {
    let output = Command::new(BINARY)
        .args([
            "policy",
            "dry-run",
            "--policies",
            &repo("policies"),
            "--config",
            &repo("examples/config.yaml"),
        ])
        .args([
            repo("examples/requests/admitted.yaml"),
            repo("examples/requests/not-allowed.yaml"),
            repo("examples/requests/bad-digest.yaml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{stdout}"))
    };
    assert!(line("example-admitted").contains("allow"));
    assert!(line("example-not-allowed").contains("'unlisted-tenant' is not on the allow-list"));
    assert!(line("example-bad-digest").contains("parameter 'bar'"));
}

#[test]
fn dry_run_of_admitted_request_succeeds() {
    let status = Command::new(BINARY)
        .args([
            "policy",
            "dry-run",
            "--policies",
            &repo("policies"),
            "--config",
            &repo("examples/config.yaml"),
        ])
        .arg(repo("examples/requests/admitted.yaml"))
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn dry_run_with_a_missing_config_file_is_an_error() {
    let output = Command::new(BINARY)
        .args([
            "policy",
            "dry-run",
            "--config",
            "/nonexistent/config.yaml",
            "x.yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/config.yaml")
    );
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let output = Command::new(BINARY).arg("crd").output().unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    for file in ["internalrequests.yaml", "internalservicesconfigs.yaml"] {
        let committed = std::fs::read_to_string(repo(&format!("deploy/crds/{file}"))).unwrap();
        assert!(
            generated.contains(&committed),
            "deploy/crds/{file} differs from `internal-services crd`; regenerate with \
             `cargo run -- crd --output-dir deploy/crds`"
        );
    }
}
