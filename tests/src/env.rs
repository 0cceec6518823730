//! Where things are: the workspace, the server binary, project-local tools, external tools.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Project-local tools (`<workspace>/.tools`, or `FERROCAST_TOOLS_DIR`).
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("FERROCAST_TOOLS_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join(".tools"),
    }
}

/// The npm prefix where `scripts/test.sh` installs playwright-core and mpegts.js.
pub fn node_tools_dir() -> PathBuf {
    tools_dir().join("node")
}

/// The cargo target directory (`CARGO_TARGET_DIR`, relative to the workspace root when relative).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Candidate locations of the `ferrocast` binary, best first.
fn server_bin_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    // The test executable lives in <target>/<profile>/deps/; the binary built by the same
    // `cargo test` invocation (same profile, same target dir) is in <target>/<profile>/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            out.push(profile_dir.join("ferrocast"));
        }
    }
    out.push(target_dir().join("debug").join("ferrocast"));
    out
}

/// The server binary: `FERROCAST_BIN`, else `ferrocast` next to this test's profile directory,
/// else `<target>/debug/ferrocast`. Panics with a clear message when it does not exist.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROCAST_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "FERROCAST_BIN={} does not exist: run scripts/test.sh or cargo build --bins",
            p.display()
        );
        return p;
    }
    let candidates = server_bin_candidates();
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "server binary `ferrocast` not found (looked at {}): run scripts/test.sh or cargo build --bins",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The absolute path of an executable found on PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if is_executable(&p) {
            return Some(p);
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Panics with "missing tool NAME: run scripts/test.sh" when `name` is not on PATH.
pub fn require_tool(name: &str) -> PathBuf {
    match find_tool(name) {
        Some(p) => p,
        None => panic!("missing tool {name}: run scripts/test.sh"),
    }
}

/// Panics naming the npm package when it is not installed under `.tools/node`.
pub fn require_node_package(name: &str) -> PathBuf {
    let p = node_tools_dir().join("node_modules").join(name);
    if !p.join("package.json").is_file() {
        panic!(
            "missing tool {name} (npm package, expected in {}): run scripts/test.sh",
            p.display()
        );
    }
    p
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
