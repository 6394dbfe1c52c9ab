//! The `aviary` command line, run as a real process: account management with the
//! embedded store (directly, and through a running server's admin socket), bulk
//! import, and configuration checking. Bad input must give a clear message and a
//! non-zero exit, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn aviary(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
    cmd.args(args)
        .current_dir(data)
        .env("AVIARY__SERVER__DATA_DIR", data)
        .env(
            "AVIARY__SERVER__DOMAINS",
            r#"["example.test", "other.test"]"#,
        )
        .env("AVIARY__AUTH__SCRAM_ITERATIONS", "4096")
        .env_remove("AVIARY_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run aviary");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure, got success");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error:")), "{err}");
    err
}

#[test]
fn user_lifecycle_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&aviary(
        d,
        &["user", "add", "alice", "--password", "secret"],
        None,
    ));
    // Password from standard input, explicit domain.
    ok(&aviary(
        d,
        &["user", "add", "bob@other.test"],
        Some("pw from stdin\n"),
    ));
    let list = ok(&aviary(d, &["user", "list"], None));
    assert_eq!(list, "alice@example.test\nbob@other.test\n");
    let e = fails(&aviary(
        d,
        &["user", "add", "alice", "--password", "x"],
        None,
    ));
    assert!(e.contains("already exists"), "{e}");
    ok(&aviary(
        d,
        &["user", "passwd", "alice", "--password", "new"],
        None,
    ));
    let e = fails(&aviary(
        d,
        &["user", "passwd", "nobody", "--password", "x"],
        None,
    ));
    assert!(e.contains("does not exist"), "{e}");
    ok(&aviary(d, &["user", "del", "alice"], None));
    let e = fails(&aviary(d, &["user", "del", "alice"], None));
    assert!(e.contains("does not exist"), "{e}");
    let e = fails(&aviary(
        d,
        &["user", "add", "x@elsewhere.test", "--password", "p"],
        None,
    ));
    assert!(e.contains("not a served domain"), "{e}");
    let e = fails(&aviary(
        d,
        &["user", "add", "a@b@c", "--password", "p"],
        None,
    ));
    assert!(e.contains("not a valid account name"), "{e}");
    let e = fails(&aviary(
        d,
        &["user", "add", "carol", "--password", ""],
        None,
    ));
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn import_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = "# users\nu1 pw1\n\nu2\nbad@user@x pw\nu3 pw with spaces\n";
    std::fs::write(d.join("bad.txt"), bad).unwrap();
    let e = fails(&aviary(d, &["user", "import", "bad.txt"], None));
    assert!(e.contains("line 4") && e.contains("line 5"), "{e}");
    assert!(e.contains("nothing was imported"), "{e}");
    assert_eq!(ok(&aviary(d, &["user", "list"], None)), "");

    let mut good = String::new();
    for i in 0..50 {
        good.push_str(&format!("user{i:03} password {i}\n"));
    }
    std::fs::write(d.join("good.txt"), &good).unwrap();
    let out = ok(&aviary(d, &["user", "import", "good.txt"], None));
    assert!(out.contains("imported 50"), "{out}");
    let again = ok(&aviary(d, &["user", "import", "-"], Some(&good)));
    assert!(
        again.contains("imported 0") && again.contains("50 already existed"),
        "{again}"
    );
    assert_eq!(ok(&aviary(d, &["user", "list"], None)).lines().count(), 50);
}

#[test]
fn user_commands_work_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut config = aviary::Config::default();
    config.server.data_dir = d.to_path_buf();
    config.server.domains = vec!["example.test".into(), "other.test".into()];
    config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.c2s.listen_tls = vec![];
    config.server.workers = 1;
    let node = aviary::server::spawn(config).unwrap();
    ok(&aviary(
        d,
        &["user", "add", "live", "--password", "pw"],
        None,
    ));
    let list = ok(&aviary(d, &["user", "list"], None));
    assert_eq!(list, "live@example.test\n");
    ok(&aviary(
        d,
        &["user", "passwd", "live", "--password", "pw2"],
        None,
    ));
    ok(&aviary(
        d,
        &["user", "import", "-"],
        Some("bulk1 a\nbulk2 b\n"),
    ));
    ok(&aviary(d, &["user", "del", "live"], None));
    assert_eq!(
        ok(&aviary(d, &["user", "list"], None)),
        "bulk1@example.test\nbulk2@example.test\n"
    );
    node.stop();
    // After shutdown the store opens directly again and kept everything.
    assert_eq!(ok(&aviary(d, &["user", "list"], None)).lines().count(), 2);
}

#[test]
fn config_check_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(&aviary(d, &["config", "check"], None));
    assert!(out.contains("valid"), "{out}");
    let dump = ok(&aviary(d, &["config", "dump"], None));
    assert!(dump.contains("require_tls = true"), "{dump}");

    std::fs::write(d.join("bad.toml"), "[c2s]\nrequire_tsl = false\n").unwrap();
    let e = fails(&aviary(
        d,
        &["--config", "bad.toml", "config", "check"],
        None,
    ));
    assert!(e.contains("bad.toml") && e.contains("require_tsl"), "{e}");
    let e = fails(&aviary(
        d,
        &["--config", "missing.toml", "config", "check"],
        None,
    ));
    assert!(e.contains("missing.toml"), "{e}");
    std::fs::write(
        d.join("zero.toml"),
        "[server]\nmax_resources_per_account = 0\n",
    )
    .unwrap();
    let e = fails(&aviary(
        d,
        &["--config", "zero.toml", "config", "check"],
        None,
    ));
    assert!(e.contains("max_resources_per_account"), "{e}");
    // The environment overrides the file (here: the harness sets the iterations).
    std::fs::write(d.join("weak.toml"), "[auth]\nscram_iterations = 100\n").unwrap();
    ok(&aviary(
        d,
        &["--config", "weak.toml", "config", "check"],
        None,
    ));
}
