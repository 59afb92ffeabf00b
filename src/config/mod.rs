//! Configuration: `config.toml` → [`Config`].
//!
//! Two layers: [`file`] mirrors the TOML with serde, [`model`] validates it once into typed,
//! ready-to-use settings. Errors carry the file, line, column and key ([`error`]); secrets come
//! from the environment or files ([`secret`]). Load once at start and on reload; the request
//! path never sees a config string.

pub mod error;
pub mod file;
pub mod front;
pub mod model;
pub mod provider;
pub mod secret;
mod templates;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::Config;

use error::Reporter;

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config: {e}"),
        }])
    })?;
    parse(path, &src)
}

/// Validate config text; `path` is only used in messages.
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
    let mut rep = Reporter::new(path, src);
    let de = toml::Deserializer::new(src);
    let file: file::File = match serde_path_to_error::deserialize(de) {
        Ok(f) => f,
        Err(e) => {
            let key = e.path().to_string();
            let inner = e.into_inner();
            // toml's own message repeats the position and quotes the line; keep its first
            // sentence only, the position goes in front like every other error.
            let msg = inner.message().trim().to_string();
            let key = if key == "." { String::new() } else { key };
            rep.error(key, inner.span(), msg);
            return Err(ConfigErrors(rep.errors));
        }
    };
    match model::validate(&file, &mut rep) {
        Some(c) if rep.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(rep.errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> Vec<ConfigError> {
        parse(Path::new("t.toml"), src).unwrap_err().0
    }

    const UP: &str = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n";

    #[test]
    fn empty_config_has_defaults() {
        let c = parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.admin_address.to_string(), "127.0.0.1:9090");
        assert!(c.routes.is_empty());
        assert_eq!(c.gateway_prefix, "/.authgate/");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = errs("[server]\nthreads = 2\n\n[[routes]]\nupstream = \"app\"\nbogus = 1\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 6, "{}", e[0]);
        assert!(e[0].key.starts_with("routes"), "{}", e[0]);
        assert!(e[0].message.contains("bogus"), "{}", e[0]);
    }

    #[test]
    fn semantic_errors_have_lines() {
        let src = format!(
            "{UP}\n[[routes]]\npath = \"/\"\nupstream = \"nope\"\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n"
        );
        let e = errs(&src);
        let missing = e
            .iter()
            .find(|e| e.message.contains("unknown upstream"))
            .unwrap();
        assert_eq!(
            (missing.line, missing.key.as_str()),
            (6, "routes[0].upstream")
        );
        let dup = e
            .iter()
            .find(|e| e.message.contains("duplicate route"))
            .unwrap();
        assert_eq!((dup.line, dup.key.as_str()), (13, "routes[2].path"));
    }

    #[test]
    fn bad_url_and_duration() {
        let e = errs(
            "[upstreams.x]\nservers = [\"ftp://a\", \"http://\"]\nconnect_timeout = \"soon\"\n",
        );
        assert!(e
            .iter()
            .any(|e| e.key == "upstreams.x.servers[0]" && e.line == 2));
        assert!(e
            .iter()
            .any(|e| e.key == "upstreams.x.servers[1]" && e.line == 2));
        assert!(e
            .iter()
            .any(|e| e.key == "upstreams.x.connect_timeout" && e.line == 3));
    }

    #[test]
    fn non_canonical_route_path_is_refused() {
        let e = errs(&format!(
            "{UP}[[routes]]\npath = \"/a/../b\"\nupstream = \"app\"\n"
        ));
        assert!(e[0].message.contains("\"/b\""), "{}", e[0]);
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "from-file\n").unwrap();
        let src = format!(
            "[[providers]]\nid = \"a\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_file = {:?}\n\n[[providers]]\nid = \"b\"\nissuer = \"https://idp2.example\"\nclient_id = \"c\"\nclient_secret = \"${{AUTHGATE_TEST_UNSET_VAR}}\"\n",
            f.display().to_string()
        );
        let e = errs(&src);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("AUTHGATE_TEST_UNSET_VAR"));
        assert_eq!(e[0].line, 11);
    }

    #[test]
    fn ambiguous_policies_are_refused() {
        let src = format!(
            "{UP}[[routes]]\npath = \"/a\"\nupstream = \"app\"\n[routes.policy]\n\n[[routes]]\npath = \"/b\"\nupstream = \"app\"\npublic = true\n[routes.policy]\ngroups = [\"x\"]\n\n[[routes]]\npath = \"/c\"\nupstream = \"app\"\n[routes.policy]\nemail_domains = [\"@corp.com\", \".corp.com\"]\nemails = [\"a@b@c\"]\nmethods = [\"GE T\"]\n"
        );
        let e = errs(&src);
        let has = |key: &str, msg: &str| {
            e.iter()
                .any(|x| x.key == key && x.message.contains(msg) && x.line > 0)
        };
        assert!(has("routes[0].policy", "empty policy"), "{e:?}");
        assert!(has("routes[1].policy", "public route"), "{e:?}");
        assert!(
            has("routes[2].policy.email_domains[0]", "domain only"),
            "{e:?}"
        );
        assert!(
            has("routes[2].policy.email_domains[1]", "domain only"),
            "{e:?}"
        );
        assert!(has("routes[2].policy.emails[0]", "not an email"), "{e:?}");
        assert!(
            has("routes[2].policy.methods[0]", "not an HTTP method"),
            "{e:?}"
        );
    }

    #[test]
    fn example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        if let Err(e) = load(&p) {
            panic!("config.toml: {e}");
        }
    }
}
