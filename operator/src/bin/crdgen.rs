//! `crdgen`: writes the CRDs generated from the Rust types, one file per CRD
//! (`crds/mediaapps.yaml`, `crds/streamauths.yaml`), or prints them.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
crdgen: write the Ferrocast CRDs generated from the operator's types

USAGE:
    crdgen [--out DIR]    write DIR/mediaapps.yaml and DIR/streamauths.yaml (default DIR: crds)
    crdgen --print        print both, separated by ---
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("crds");
    let mut print = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => match args.next() {
                Some(d) => out = PathBuf::from(d),
                None => return usage("--out needs a directory"),
            },
            "--print" => print = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let files = ferrocast_operator::crd::crd_files();
    if print {
        let docs: Vec<&str> = files.iter().map(|(_, y)| y.as_str()).collect();
        print!("{}", docs.join("---\n"));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("crdgen: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in files {
        let path = out.join(name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn usage(message: &str) -> ExitCode {
    eprintln!("crdgen: {message}\n\n{USAGE}");
    ExitCode::from(2)
}
