//! What the operator's benchmarks share.

use std::path::PathBuf;
use std::process::Command;

/// Builds the workspace binary `name` with the Cargo profile `profile` (`release`, or `operator`
/// for the operator image's build) and returns its path.
pub fn built_binary(name: &str, profile: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--profile", profile, "--bin", name])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building {name} with profile {profile} failed"
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join(profile).join(name)
}
