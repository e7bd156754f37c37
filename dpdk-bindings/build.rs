//! Finds the system DPDK through pkg-config, generates bindings for the parts privlink
//! uses, and compiles the shim that gives DPDK's static-inline fast path a symbol.

use std::env;
use std::path::PathBuf;

const INSTALL_HINT: &str = "privlink needs DPDK 22.11 development files. On Debian 12 install them with:\n    apt-get install dpdk dpdk-dev libdpdk-dev libclang-dev clang pkg-config\n(or run scripts/install-deps.sh as root).";

fn main() {
    println!("cargo:rerun-if-changed=csrc/wrapper.h");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("21.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!("error: pkg-config could not find libdpdk: {e}\n{INSTALL_HINT}");
            std::process::exit(1);
        }
    };

    // The exact compiler flags DPDK was built for (notably `-include rte_config.h` and
    // `-march=corei7`): bindgen and the shim must see the same struct layouts.
    let cflags = pkg_config_cflags();

    let mut shim = cc::Build::new();
    shim.file("csrc/shim.c")
        .include("csrc")
        .opt_level(3)
        .warnings(false)
        .flag_if_supported("-Wno-deprecated-declarations");
    for p in &dpdk.include_paths {
        shim.include(p);
    }
    for f in &cflags {
        if !f.starts_with("-I") {
            shim.flag(f);
        }
    }
    shim.compile("privlink_dpdk_shim");

    let mut builder = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_arg("-Icsrc")
        .clang_args(cflags.iter())
        .allowlist_function("rte_.*")
        .allowlist_function("plk_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("rte_.*")
        // Packed structs holding aligned ones (and their users) break derive/compile: keep
        // them opaque, privlink never looks inside.
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_flow_item_gtp_psc")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .blocklist_function("rte_eal_remote_launch_with_args")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for p in &dpdk.include_paths {
        builder = builder.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = match builder.generate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: bindgen failed on the DPDK headers: {e}\n{INSTALL_HINT}");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs into OUT_DIR");
}

fn pkg_config_cflags() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        _ => {
            eprintln!("error: `pkg-config --cflags libdpdk` failed.\n{INSTALL_HINT}");
            std::process::exit(1);
        }
    }
}
