//! What the operator's benchmarks share.

use std::path::PathBuf;
use std::process::Command;

/// Builds the workspace binary `name` in release mode and returns its path.
pub fn release_binary(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", name])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("release").join(name)
}
