//! Settings through the real binary: the layers' order (file < variables
//! < flags) and `serve --help` showing every declared setting.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `hubcast serve` with only the given variables, on an address already
/// taken: a config that passes its checks fails at the bind instead of
/// serving, so each case ends at once and says how far it got.
pub(crate) fn serve(file: Option<&str>, vars: &[(&str, &str)], flags: &[&str]) -> String {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
    let addr = taken.local_addr().expect("its address").to_string();
    static CASES: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hubcast-settings-{}-{}",
        std::process::id(),
        CASES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubcast"));
    cmd.env_clear().args(["serve", "--listen", &addr]);
    if let Some(text) = file {
        let path = dir.join("settings.toml");
        std::fs::write(&path, text).expect("write the file");
        cmd.env("HUBCAST_CONFIG", &path);
    }
    cmd.envs(vars.iter().copied()).args(flags);
    let Output { status, stderr, .. } = cmd.output().expect("run hubcast");
    std::fs::remove_dir_all(&dir).ok();
    assert!(!status.success(), "hubcast served on a taken address");
    String::from_utf8_lossy(&stderr).into_owned()
}

pub(crate) const PASSED: &str = "cannot listen on";

#[test]
fn file_then_variables_then_flags() {
    for (file, vars, flags, says) in [
        (Some("heartbeat = 0\n"), &[][..], &[][..], "heartbeat:"),
        (
            Some("heartbeat = 0\n"),
            &[("HUBCAST_HEARTBEAT", "5")],
            &[],
            PASSED,
        ),
        (
            Some("heartbeat = 5\n"),
            &[("HUBCAST_HEARTBEAT", "0")],
            &[],
            "heartbeat:",
        ),
        (
            None,
            &[("HUBCAST_HEARTBEAT", "0")],
            &["--heartbeat", "5"],
            PASSED,
        ),
        (
            None,
            &[("HUBCAST_HEARTBEAT", "5")],
            &["--heartbeat", "0"],
            "heartbeat:",
        ),
        (Some("heartbeat = 0\n"), &[], &["--heartbeat=5"], PASSED),
        (
            Some("allowed_origins = [\"https://ok.example\"]\n"),
            &[("HUBCAST_ALLOWED_ORIGINS", "ftp://x")],
            &[],
            "allowed_origins:",
        ),
        (
            None,
            &[("HUBCAST_ALLOWED_ORIGINS", "ftp://x")],
            &["--allowed-origins", "https://ok.example,*.ok.example"],
            PASSED,
        ),
        (Some("web = \"yes\"\n"), &[], &[], "web"),
        (None, &[("HUBCAST_WEB", "false")], &["--web"], PASSED),
    ] {
        let err = serve(file, vars, flags);
        assert!(
            err.contains(says),
            "file {file:?}, variables {vars:?}, flags {flags:?}: expected {says:?} in\n{err}"
        );
    }
}

#[test]
fn serve_help_shows_every_declared_setting_with_its_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .env_clear()
        .args(["serve", "--help"])
        .output()
        .expect("run hubcast");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let settings = hubcast::config::settings();
    assert!(settings.len() > 30, "{} settings", settings.len());
    for s in settings {
        let heading = format!("--{} ", s.flag);
        let section = section(&help, &heading)
            .unwrap_or_else(|| panic!("{heading} missing from help:\n{help}"));
        assert!(section.contains(&format!("[env: {}", s.env)), "{section}");
        match &s.default {
            Some(default) => assert!(
                section.contains(&format!("[default: {default}]")),
                "{section}"
            ),
            None => assert!(!section.contains("[default:"), "{section}"),
        }
    }
}

/// The lines of a flag's entry in `--help`, from its heading (`--flag
/// <VALUE>`, indented less than the help text under it) to the next.
fn section(help: &str, heading: &str) -> Option<String> {
    let is_heading = |line: &str| {
        let text = line.trim_start();
        text.starts_with('-') && line.len() - text.len() < 8
    };
    let mut lines = help
        .lines()
        .skip_while(|line| !(is_heading(line) && line.trim_start().starts_with(heading)));
    let first = lines.next()?;
    let rest: Vec<&str> = lines.take_while(|line| !is_heading(line)).collect();
    Some(format!("{first}\n{}", rest.join("\n")))
}
