//! Interoperability with slixmpp (PyPI), a third-party XMPP client, so that Aviary
//! is not only tested against our own client code. The client side is
//! `tests/python/slixmpp_chat.py`, run with the virtualenv that
//! `deploy/dev/python.sh install` creates; it prints a `key=value` summary that the
//! tests here check on their own, besides its exit status.

use aviary_tests::TestServer;
use aviary_tests::pki::TestPki;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The script's own deadline; the test allows a margin on top before killing it.
const SCRIPT_TIMEOUT_SECS: u64 = 30;
const EXIT_AUTH_REFUSED: i32 = 3;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The venv interpreter: `AVIARY_TEST_PYTHON`, else the one `python.sh install`
/// creates. A missing interpreter fails the test: skipping would hide that the
/// interoperability suite did not run.
fn python() -> PathBuf {
    let (path, origin) = match std::env::var_os("AVIARY_TEST_PYTHON").filter(|p| !p.is_empty()) {
        Some(p) => (PathBuf::from(p), "AVIARY_TEST_PYTHON"),
        None => {
            // Like python.sh: an empty AVIARY_DEV_DIR counts as unset.
            let dev = std::env::var_os("AVIARY_DEV_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join(".dev"));
            (dev.join("venv/bin/python"), "the default venv")
        }
    };
    assert!(
        path.exists(),
        "no Python with slixmpp at {} ({origin}): run `deploy/dev/python.sh install` \
         (or set AVIARY_TEST_PYTHON to a Python that has slixmpp 1.17)",
        path.display()
    );
    path
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    summary: HashMap<String, String>,
    elapsed: Duration,
}

impl Run {
    fn get(&self, key: &str) -> &str {
        self.summary
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("summary has no {key}\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout ---\n{}--- stderr (slixmpp debug log) ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs the client script against the server's STARTTLS endpoint (explicit host and
/// port: no DNS SRV), trusting only the test CA.
async fn run_script(server: &TestServer, extra: &[&str]) -> Run {
    let addr = server.endpoint(0);
    let script = repo_root().join("tests/python/slixmpp_chat.py");
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(&script)
        .args(["--host", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--domain", &server.domain])
        .arg("--ca")
        .arg(&TestPki::get().ca_pem)
        .args(["--timeout", &SCRIPT_TIMEOUT_SECS.to_string()])
        .arg("--debug")
        .args(extra)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let out = tokio::time::timeout(
        Duration::from_secs(SCRIPT_TIMEOUT_SECS + 15),
        child.wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("slixmpp script still running after its own deadline: killed"))
    .unwrap_or_else(|e| panic!("waiting for the slixmpp script: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = stdout
        .lines()
        .skip_while(|l| *l != "--- summary ---")
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Run {
        code: out.status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        summary,
        elapsed: started.elapsed(),
    }
}

#[tokio::test]
async fn slixmpp_two_users_chat_both_ways_over_starttls_scram() {
    chat_both_ways("SCRAM-SHA-256").await;
}

#[tokio::test]
async fn slixmpp_two_users_chat_both_ways_scram_sha1() {
    chat_both_ways("SCRAM-SHA-1").await;
}

/// Two slixmpp clients log in with `mech` and exchange a chat message each way.
async fn chat_both_ways(mech: &str) {
    let server = TestServer::start();
    let (alice, apw) = server.new_account("slixa").await;
    let (bob, bpw) = server.new_account("slixb").await;
    let run = run_script(
        &server,
        &[
            "--user1", &alice, "--pass1", &apw, "--user2", &bob, "--pass2", &bpw, "--mech", mech,
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.get("slixmpp"), "1.17.0", "{run}");

    for (tag, user) in [("user1", &alice), ("user2", &bob)] {
        // RFC 6120 §5: STARTTLS before anything else; §6 / RFC 5802, RFC 7677: the
        // forced SCRAM mechanism and nothing else was sent (no fallback to PLAIN),
        // in one round trip, and the server proved it knows the password.
        assert!(
            run.get(&format!("{tag}.tls")).starts_with("TLSv1."),
            "{run}"
        );
        assert_eq!(run.get(&format!("{tag}.auth_sent")), mech, "{run}");
        assert_eq!(run.get(&format!("{tag}.mechanism")), mech, "{run}");
        assert_eq!(run.get(&format!("{tag}.challenges")), "1", "{run}");
        assert_eq!(
            run.get(&format!("{tag}.server_signature")),
            "verified",
            "{run}"
        );
        // RFC 6120 §7: the bound JID is the account's, with a resource.
        let jid = run.get(&format!("{tag}.jid"));
        let prefix = format!("{}/", server.bare(user));
        assert!(
            jid.starts_with(&prefix) && jid.len() > prefix.len(),
            "{tag} bound {jid}\n{run}"
        );
    }
    let (a_jid, b_jid) = (run.get("user1.jid"), run.get("user2.jid"));
    assert_ne!(a_jid, b_jid);

    // RFC 6120 §8.1.2.1: delivered with `from` stamped as the sender's full JID,
    // body intact (including XML-special and non-ASCII characters) both ways.
    for (key, from) in [("user1_to_user2", a_jid), ("user2_to_user1", b_jid)] {
        assert_eq!(run.get(&format!("{key}.from")), from, "{run}");
        assert_eq!(
            run.get(&format!("{key}.body")),
            run.get(&format!("{key}.sent_body")),
            "{run}"
        );
    }
    assert!(run.get("user1_to_user2.body").contains("<&>"), "{run}");
    // RFC 6120 §4.4: both streams closed by the server in reply to ours.
    assert_eq!(run.get("closed"), "both", "{run}");
    // Shown with --nocapture: the script's own account of the run.
    eprintln!("{}(run took {:?})", run.stdout, run.elapsed);
}

#[tokio::test]
async fn slixmpp_wrong_password_fails() {
    let server = TestServer::start();
    let (alice, apw) = server.new_account("slixbad").await;
    let wrong = format!("{apw}-wrong");
    let run = run_script(
        &server,
        &[
            "--user1",
            &alice,
            "--pass1",
            &wrong,
            "--mech",
            "SCRAM-SHA-256",
            "--expect-auth-failure",
        ],
    )
    .await;
    // The script's distinct status for "the server refused authentication".
    assert_eq!(run.code, Some(EXIT_AUTH_REFUSED), "{run}");
    assert!(run.stdout.contains("AUTH REFUSED (as expected)"), "{run}");
    // RFC 6120 §6.5.10: <not-authorized/>, after the one SCRAM challenge: the proof
    // in client-final is what the server rejected (RFC 5802 §5).
    assert_eq!(run.get("user1.failure"), "not-authorized", "{run}");
    assert_eq!(run.get("user1.challenges"), "1", "{run}");
    assert_eq!(run.get("user1.auth_sent"), "SCRAM-SHA-256", "{run}");
    assert!(run.get("user1.tls").starts_with("TLSv1."), "{run}");
    assert_eq!(run.get("closed"), "user1", "{run}");
    eprintln!("{}(run took {:?})", run.stdout, run.elapsed);

    // The same account still logs in with the right password (the refusal is about
    // the password, not a broken account).
    let ok = server.login(0, &alice, &apw, "check").await;
    ok.close().await.unwrap();
}
