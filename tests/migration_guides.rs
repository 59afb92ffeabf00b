//! The migration guides (`docs/migrate-*.md`): every TOML block in them is a complete config
//! that `authgate check --offline` accepts, verbatim, and the README links every guide.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

const GUIDES: &[&str] = &[
    "docs/migrate-oauth2-proxy.md",
    "docs/migrate-mod-auth-openidc.md",
];

/// The fenced ```toml blocks of a Markdown text, verbatim.
fn toml_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match current.as_mut() {
            None if line == "```toml" => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unterminated ```toml block");
    blocks
}

/// `authgate check --offline` on `src` (as `name`): success and the output.
fn check_offline(name: &str, src: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, src).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--offline", "-c"])
        .arg(&p)
        .env_remove("AUTHGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_toml_block_of_the_guides_checks_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for guide in GUIDES {
        let md = std::fs::read_to_string(root.join(guide)).unwrap();
        let blocks = toml_blocks(&md);
        assert!(blocks.len() >= 2, "{guide}: {} TOML blocks", blocks.len());
        for (i, block) in blocks.iter().enumerate() {
            let (ok, out) = check_offline(&format!("block{i}.toml"), block);
            assert!(ok, "{guide}, TOML block {}:\n{block}\n{out}", i + 1);
        }
    }
}

/// The oauth2-proxy guide's configs keep oauth2-proxy's `/oauth2/` layout, as it says.
#[test]
fn the_oauth2_proxy_configs_answer_under_oauth2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let md = std::fs::read_to_string(root.join(GUIDES[0])).unwrap();
    for block in toml_blocks(&md) {
        let (ok, out) = check_offline("c.toml", &block);
        assert!(ok && out.contains("\ngateway prefix: /oauth2/\n"), "{out}");
    }
}

/// A broken block would be caught: the extraction really hands `check` the text.
#[test]
fn a_broken_block_fails() {
    let md = "text\n```toml\n[[routes]]\npath = \"/\"\nupstream = \"nope\"\n```\n";
    let blocks = toml_blocks(md);
    assert_eq!(blocks, ["[[routes]]\npath = \"/\"\nupstream = \"nope\"\n"]);
    let (ok, out) = check_offline("c.toml", &blocks[0]);
    assert!(!ok);
    assert!(
        out.contains("c.toml:3:12: routes[0].upstream: unknown upstream \"nope\""),
        "{out}"
    );
}

#[test]
fn the_readme_links_every_guide() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for guide in GUIDES {
        assert!(
            readme.contains(&format!("]({guide})")),
            "README.md: {guide}"
        );
    }
}
