//! Build script: compiles the BPF program into a libbpf-rs skeleton, and nothing else.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const BPF_SOURCE: &str = "src/bpf/tcpstates.bpf.c";
const BPF_HEADERS: [&str; 2] = ["src/bpf/tcpstates.h", "src/bpf/vmlinux_core.h"];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let skeleton = out_dir.join("tcpstates.skel.rs");
    if let Err(err) = SkeletonBuilder::new()
        .source(BPF_SOURCE)
        .clang_args(["-Wall", "-Wno-unused-function", "-Werror"])
        .build_and_generate(&skeleton)
    {
        panic!("building the BPF program {BPF_SOURCE} failed (is clang installed?): {err:#}");
    }
    println!("cargo:rerun-if-changed={BPF_SOURCE}");
    for header in BPF_HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
}
