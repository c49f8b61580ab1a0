//! How the `rask` binary is linked.

use std::process::Command;

fn glibc_at_least_2_36() -> bool {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let version = text.unwrap_or_default();
    let mut parts = version.trim().trim_start_matches("glibc ").split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 36)
}

/// worker/build.rs packs the relative relocations where this machine's glibc can load them
/// (the idle scheduler's memory depends on it), and only there.
#[test]
fn relocations_are_packed_where_glibc_loads_them() {
    if !cfg!(all(
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    )) || std::env::var("RASK_PACK_RELOCS").is_ok_and(|v| v == "0")
    {
        return;
    }
    let out = Command::new("readelf")
        .args(["--dynamic", crate::rask_bin()])
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success());
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let packed = dynamic.contains("(RELR)");
    assert_eq!(
        packed,
        glibc_at_least_2_36(),
        "DT_RELR in {}: {packed}",
        crate::rask_bin()
    );
}
