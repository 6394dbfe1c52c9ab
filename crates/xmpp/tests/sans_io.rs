//! The architecture requires this crate to stay sans-IO (see CONVENTIONS.md):
//! its dependencies must not include an async runtime or an I/O event loop.

const FORBIDDEN: &[&str] = &["tokio", "actix", "mio", "async-std", "smol", "async-io"];

/// The dependency names of every non-dev dependency table in a Cargo.toml.
fn runtime_dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let table = header.trim_end_matches(']');
            // [dependencies], [build-dependencies], [target.'cfg(..)'.dependencies],
            // and the dotted form [dependencies.tokio].
            in_deps = !table.contains("dev-dependencies")
                && (table.ends_with("dependencies") || table.contains("dependencies."));
            match table.rsplit_once("dependencies.") {
                Some((_, name)) if in_deps => names.push(name.trim_matches(['"', '\'']).to_owned()),
                _ => {}
            }
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let key = line.split(['=', '.']).next().unwrap_or_default().trim();
            names.push(key.trim_matches(['"', '\'']).to_owned());
        }
    }
    names
}

fn forbidden(name: &str) -> bool {
    FORBIDDEN
        .iter()
        .any(|f| name == *f || name.starts_with(&format!("{f}-")))
}

#[test]
fn xmpp_crate_has_no_io_runtime_dependency() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let manifest = std::fs::read_to_string(path).expect("read Cargo.toml");
    let deps = runtime_dependencies(&manifest);
    assert!(
        deps.iter().any(|d| d == "quick-xml"),
        "parsed no dependencies: {deps:?}"
    );
    let bad: Vec<_> = deps.iter().filter(|d| forbidden(d)).collect();
    assert!(bad.is_empty(), "sans-IO crate depends on {bad:?}");
}

#[test]
fn the_check_catches_runtimes() {
    let manifest = "[package]\nname='x'\n[dependencies]\njid = '1'\ntokio = { version = '1' }\n\
        [target.'cfg(unix)'.dependencies]\nmio.workspace = true\n[dependencies.actix-rt]\nversion='2'\n\
        [dev-dependencies]\nasync-std = '1'\n";
    let deps = runtime_dependencies(manifest);
    let bad: Vec<_> = deps.iter().filter(|d| forbidden(d)).collect();
    assert_eq!(bad, ["tokio", "mio", "actix-rt"]);
}
