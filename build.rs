//! Link settings for the release programs (see ARCHITECTURE.md, "Memory"):
//!
//! - `build/iris.order` (made by `scripts/symbol-order`) is handed to the linker, which lays
//!   the functions a running Iris uses next to each other: it then touches ~4 MiB of its
//!   code, not pages all over its 13 MiB of text. Only for release builds on
//!   x86_64-unknown-linux-gnu with the toolchain's own linker (rust-lld, the default there,
//!   which takes `--symbol-ordering-file`; GNU ld does not): not when a linker is configured
//!   or the flags choose another one. `IRIS_NO_SYMBOL_ORDER=1` leaves it out.
//! - Relative relocations are packed (`DT_RELR`) when the C library linked against can load
//!   them (glibc 2.36 and later): 20,000 relocations the loader reads at every start become a
//!   few hundred words.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/iris.order");
    println!("cargo:rerun-if-env-changed=IRIS_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !linux_gnu {
        return;
    }
    let native = var("TARGET") == var("HOST");
    if native && libc_loads_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("build/iris.order");
    if var("PROFILE") == "release"
        && var("TARGET") == "x86_64-unknown-linux-gnu"
        && var("IRIS_NO_SYMBOL_ORDER").is_empty()
        && links_with_rust_lld(&var("CARGO_ENCODED_RUSTFLAGS"), &var("RUSTC_LINKER"))
        && order.is_file()
    {
        println!(
            "cargo:rustc-link-arg-bin=iris=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names that a later change renamed or inlined away are skipped, silently.
        println!("cargo:rustc-link-arg-bin=iris=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the link runs through rust-lld as the toolchain sets it up on
/// x86_64-unknown-linux-gnu: no linker of the project's or user's choosing (`RUSTC_LINKER`,
/// `-C linker=`), and no flag that changes the linker (`-C linker-features`,
/// `-C link-self-contained`, `-fuse-ld=`, `-C linker-flavor`).
fn links_with_rust_lld(encoded_rustflags: &str, rustc_linker: &str) -> bool {
    rustc_linker.is_empty()
        && !encoded_rustflags.split('\u{1f}').any(|flag| {
            [
                "linker",
                "link-self-contained",
                "fuse-ld",
                "linker-flavor",
                "linker-features",
            ]
            .iter()
            .any(|setting| flag.contains(setting))
        })
}

/// Whether the `libc.so.6` the C compiler links against defines `GLIBC_ABI_DT_RELR`, the
/// version a program with packed relocations needs (glibc 2.36+).
fn libc_loads_relr() -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let Ok(output) = Command::new(cc).arg("-print-file-name=libc.so.6").output() else {
        return false;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !path.is_absolute() {
        return false;
    }
    std::fs::read(&path).is_ok_and(|bytes| {
        let needle = b"GLIBC_ABI_DT_RELR";
        bytes.windows(needle.len()).any(|window| window == needle)
    })
}
