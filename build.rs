//! Build script: compiles the BPF program into a libbpf-rs skeleton, and nothing else.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// The program (its parts are #included).
const BPF_SOURCES: [(&str, &str); 1] = [("src/bpf/tcpstates.bpf.c", "tcpstates.skel.rs")];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (source, skeleton) in BPF_SOURCES {
        if let Err(err) = SkeletonBuilder::new()
            .source(source)
            .clang_args(["-Wall", "-Wno-unused-function", "-Werror"])
            .build_and_generate(out_dir.join(skeleton))
        {
            panic!("building the BPF program {source} failed (is clang installed?): {err:#}");
        }
    }
    // Every C file there is part of a program (its parts are #included): rebuild on any.
    let sources = std::fs::read_dir("src/bpf").expect("reading src/bpf");
    for path in sources.filter_map(|entry| entry.ok().map(|e| e.path())) {
        if path.extension().is_some_and(|ext| ext == "c" || ext == "h") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
