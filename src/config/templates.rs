//! `gateway.templates_dir`: the operator's page templates, read and checked at load (and on
//! reload), never per request. The pages themselves are `crate::pages`.

use toml::Spanned;

use super::error::Reporter;
use super::fields::span;

/// Read every file of `dir`: each must be a known template name and parse. Errors name
/// `gateway.templates_dir` (file, line, column) and the template file (its line).
pub(super) fn read(rep: &mut Reporter, dir: &Spanned<String>) -> Vec<(String, String)> {
    const KEY: &str = "gateway.templates_dir";
    let entries = match std::fs::read_dir(dir.get_ref()) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("cannot read directory {}: {e}", dir.get_ref());
            rep.error(KEY, span(dir), msg);
            return Vec::new();
        }
    };
    let mut templates = Vec::new();
    for entry in entries {
        let (path, name) = match entry {
            Ok(e) => (e.path(), e.file_name().to_string_lossy().into_owned()),
            Err(e) => {
                rep.error(
                    KEY,
                    span(dir),
                    format!("cannot list {}: {e}", dir.get_ref()),
                );
                continue;
            }
        };
        let checked = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|src| {
                let ok = crate::pages::check(&name, &src);
                ok.map(|()| src)
                    .map_err(|e| format!("{}: {e}", dir.get_ref()))
            });
        match checked {
            Ok(src) => templates.push((name, src)),
            Err(e) => rep.error(KEY, span(dir), e),
        }
    }
    templates.sort();
    templates
}

#[cfg(test)]
mod tests {
    use super::super::error::Reporter;
    use std::path::Path;

    fn load(dir: &str) -> Result<Vec<(String, String)>, Vec<String>> {
        let src = format!("[gateway]\ntemplates_dir = {dir:?}\n");
        let f: super::super::file::File = toml::from_str(&src).unwrap();
        let mut rep = Reporter::new(Path::new("c.toml"), &src);
        let t = super::read(&mut rep, f.gateway.templates_dir.as_ref().unwrap());
        if rep.errors.is_empty() {
            Ok(t)
        } else {
            Err(rep.errors.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn templates_dir_is_checked_at_load() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap();
        assert_eq!(load(dir).unwrap(), vec![]);
        std::fs::write(d.path().join("refusal.html"), "<h1>{{ title }}</h1>").unwrap();
        let t = load(dir).unwrap();
        assert_eq!(t[0].0, "refusal.html");
        std::fs::write(d.path().join("sign_in.html"), "ok\n{% for %}").unwrap();
        std::fs::write(d.path().join("logo.png"), "x").unwrap();
        let e = load(dir).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        for e in &e {
            assert!(e.starts_with("c.toml:2:17: gateway.templates_dir: "), "{e}");
        }
        assert!(e.iter().any(|e| e.contains("sign_in.html:2:")), "{e:?}");
        assert!(
            e.iter()
                .any(|e| e.contains("logo.png is not a template name")),
            "{e:?}"
        );
        let e = load("/nonexistent/templates").unwrap_err();
        assert!(e[0].contains("cannot read directory"), "{e:?}");
    }
}
