//! Links `rask` and `rask-bench` with packed relative relocations (`-z pack-relative-relocs`,
//! DT_RELR) where the C library that will load them supports it (glibc 2.36 and later).
//!
//! `rask` is one position-independent executable of about 100,000 relative relocations (Polars'
//! tables among them), and the dynamic loader reads the whole 1.9 MB table at every start: a
//! fifth of an idle scheduler's memory. Packed, the table is a few tens of KB; the executable
//! stays position-independent with full RELRO. A binary linked so needs glibc 2.36 to load
//! (the loader names the missing `GLIBC_ABI_DT_RELR` otherwise), so the flag is used only when
//! building for the machine that builds (the README's `cargo build`, the images' Debian 12
//! build stage) and that machine's glibc is new enough. `RASK_PACK_RELOCS=0` turns it off, for
//! binaries meant for older systems.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RASK_PACK_RELOCS");
    if std::env::var("RASK_PACK_RELOCS").is_ok_and(|v| v == "0") {
        return;
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    // GNU ld has packed relocations for x86-64 since 2.38; a cross build's C library is not
    // the one probed below.
    if target != "x86_64-unknown-linux-gnu" || host != target {
        return;
    }
    if glibc_version().is_some_and(|v| v >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// This machine's glibc version, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.trim().strip_prefix("glibc ")?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
