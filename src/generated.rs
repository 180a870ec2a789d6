//! The man page and shell completions are generated from the clap definition and committed.
//! Tests fail when they are stale; `UPDATE_GENERATED=1 cargo test generated` rewrites them.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Args;

/// The hand-written sections, after the generated ones.
const SECTIONS: &str = include_str!("../man/sections.roff");

/// man/tcpstates.8: title, name, synopsis, description and options from clap, then the rest.
fn man_page() -> Vec<u8> {
    let man = clap_mangen::Man::new(Args::command())
        .section("8")
        .manual("System Administration")
        .source(concat!("tcpstates ", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    let rendered = (|| -> std::io::Result<()> {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        out.write_all(SECTIONS.as_bytes())?;
        man.render_version_section(&mut out)
    })();
    rendered.expect("rendering into memory");
    out
}

fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "tcpstates", &mut out);
    out
}

/// Every generated file and its content.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("man/tcpstates.8", man_page()),
        ("completions/tcpstates.bash", completion(Shell::Bash)),
        ("completions/_tcpstates", completion(Shell::Zsh)),
        ("completions/tcpstates.fish", completion(Shell::Fish)),
    ]
}

#[test]
fn generated_files_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (path, content) in generated() {
        let file = root.join(path);
        if update {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &content).unwrap();
        } else if std::fs::read(&file).ok().as_deref() != Some(&content[..]) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "stale against the CLI: {stale:?}; run `UPDATE_GENERATED=1 cargo test generated`"
    );
}
