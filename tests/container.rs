//! `deploy/Containerfile` and `.dockerignore`, read as files: the image cannot be built here
//! (no container registry to pull the base images from; README: Container image), so what
//! can drift without a build is checked instead: the build context keeps out target/,
//! node_modules/ and .git/ and keeps in what the build copies; the dependency layer's stand-in
//! benches are every bench Cargo.toml names (a new one would break the image build); the
//! binary is stripped; the image runs as a non-root user with the gateway's default writable
//! paths on a volume (a read-only root file system).

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The patterns of `.dockerignore`, without comments and blank lines.
fn ignored() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Whether `.dockerignore` leaves out the top-level entry `name` (a file or a directory).
fn leaves_out(name: &str) -> bool {
    ignored().iter().any(|p| {
        let p = p.trim_end_matches('/');
        p == name || p.strip_prefix("**/") == Some(name)
    })
}

#[test]
fn the_build_context_keeps_out_the_build_tree_and_keeps_in_what_the_build_copies() {
    for big in ["target", "node_modules", ".git"] {
        assert!(leaves_out(big), ".dockerignore leaves out {big}");
    }
    let containerfile = read("deploy/Containerfile");
    let copied: Vec<&str> = containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    assert!(
        copied.contains(&"Cargo.lock") && copied.contains(&"src"),
        "{copied:?}"
    );
    for c in copied {
        assert!(
            !leaves_out(c),
            ".dockerignore leaves out {c}, which the build copies"
        );
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(c).exists(),
            "{c} copied by the Containerfile"
        );
    }
}

#[test]
fn the_dependency_layer_stands_in_for_every_bench() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let mut benches: Vec<String> = manifest["bench"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    benches.sort();
    let containerfile = read("deploy/Containerfile");
    let mut stubs: Vec<String> = containerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("&& for b in "))
        .and_then(|l| l.split("; do").next())
        .expect("the loop that writes the stand-in benches")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    stubs.sort();
    assert_eq!(
        stubs, benches,
        "the Containerfile's stand-ins and Cargo.toml's [[bench]]"
    );
}

#[test]
fn the_image_is_stripped_non_root_and_writes_only_to_volumes() {
    let containerfile = read("deploy/Containerfile");
    assert!(containerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"));
    assert!(containerfile.contains("CARGO_PROFILE_RELEASE_DEBUG=0"));
    // The runtime stage is the last FROM.
    let runtime = containerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "non-root");
    assert!(runtime.contains("VOLUME [\"/tmp\"]"), "/tmp is a volume");
    // The gateway's default writable files (pid file, upgrade socket) are under /tmp, as
    // config.toml documents them (a test in src/config/defaults.rs ties those to the code).
    let config = read("config.toml");
    for key in ["pid_file", "upgrade_socket"] {
        let line = config
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("config.toml documents {key}"));
        assert!(line.contains("= \"/tmp/"), "{line}");
    }
}
