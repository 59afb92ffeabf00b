//! The HTML pages the gateway answers with, from minijinja templates with HTML
//! auto-escaping on every `{{ … }}`.
//!
//! The defaults are compiled into the binary. An operator may override any of them, to brand
//! the pages, with files of the same names in `gateway.templates_dir` (read and checked when
//! the config is loaded, see `config::model`). The set in use is built once per (re)load and
//! swapped in whole ([`install`]); a request only renders. A page that fails to render (an
//! override using a filter wrongly, say) falls back to the default page, never to an error
//! that would hide the status.

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use minijinja::{AutoEscape, Environment, Value};

/// The layout every page extends: `{% block title %}`, `{% block head %}`, `{% block content %}`.
pub(crate) const BASE: &str = "base.html";
/// A refused request. Variables: `status` (number), `title`, `message`, `code`, `request_id`,
/// `retry` (true on a 503).
pub(crate) const REFUSAL: &str = "refusal.html";
/// A failed sign-in or sign-out. Variables: `status`, `title`, `message`, `code`,
/// `request_id`, `sign_in_url`.
pub(crate) const SIGN_IN_ERROR: &str = "sign_in_error.html";
/// The sign-in chooser. Variables: `providers` (each `id`, `name`, `ready`), `return_to`.
pub(crate) const SIGN_IN: &str = "sign_in.html";
/// The sign-out confirmation. Variables: `action` (the form's POST target).
pub(crate) const SIGN_OUT: &str = "sign_out.html";
/// The form that continues sign-out at the provider. Variables: `endpoint`, `fields` (each
/// `name`, `value`), `script_nonce` (the only script the page's CSP allows).
pub(crate) const SIGNING_OUT: &str = "signing_out.html";

/// Every template name, with its default source.
pub(crate) const TEMPLATES: [(&str, &str); 6] = [
    (BASE, include_str!("templates/base.html")),
    (REFUSAL, include_str!("templates/refusal.html")),
    (SIGN_IN_ERROR, include_str!("templates/sign_in_error.html")),
    (SIGN_IN, include_str!("templates/sign_in.html")),
    (SIGN_OUT, include_str!("templates/sign_out.html")),
    (SIGNING_OUT, include_str!("templates/signing_out.html")),
];

/// A set of page templates: the defaults, with an operator's overrides.
pub(crate) struct Pages {
    env: Environment<'static>,
    /// The defaults alone: the fallback when an override fails to render.
    defaults: Option<Box<Pages>>,
}

/// A template environment for pages: every template is HTML, whatever its name, so every
/// `{{ … }}` is escaped by minijinja's escaper; `&#x2f;` is turned back into `/` (a slash is
/// harmless in HTML text and quoted attributes) so URLs read as URLs in the page source.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_formatter(|out, state, value| {
        let plain = state.auto_escape() != AutoEscape::Html
            || value.is_safe()
            || value.is_undefined()
            || value.is_none();
        if plain {
            return minijinja::escape_formatter(out, state, value);
        }
        let escaped = minijinja::HtmlEscape(&value.to_string()).to_string();
        out.write_str(&escaped.replace("&#x2f;", "/"))
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    });
    env
}

impl Pages {
    /// The compiled-in pages.
    pub(crate) fn defaults() -> Self {
        let mut env = environment();
        for (name, src) in TEMPLATES {
            // Checked by the tests: the defaults always parse.
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "default template does not parse");
            }
        }
        Self {
            env,
            defaults: None,
        }
    }

    /// The defaults with `overrides` (name, source) in their place. Each must be a known name
    /// and parse ([`check`]); the config loader has checked both.
    pub(crate) fn with_overrides(overrides: &[(String, String)]) -> Result<Self, String> {
        if overrides.is_empty() {
            return Ok(Self::defaults());
        }
        let mut pages = Self::defaults();
        for (name, src) in overrides {
            check(name, src)?;
            pages
                .env
                .add_template_owned(name.clone(), src.clone())
                .map_err(|e| format!("{name}: {e}"))?;
        }
        pages.defaults = Some(Box::new(Self::defaults()));
        Ok(pages)
    }

    /// Render page `name`; on a render error, the default page (logged), else a bare one.
    pub(crate) fn render(&self, name: &str, ctx: Value) -> String {
        match self.env.get_template(name).and_then(|t| t.render(&ctx)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(template = name, error = %e, "page template failed to render");
                match &self.defaults {
                    Some(d) => d.render(name, ctx),
                    None => "<!doctype html><title>Error</title><p>Error</p>".into(),
                }
            }
        }
    }
}

/// Whether `source` is a usable override for template `name`: a known name that parses.
pub(crate) fn check(name: &str, source: &str) -> Result<(), String> {
    if !TEMPLATES.iter().any(|(n, _)| *n == name) {
        let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "{name} is not a template name (known: {})",
            known.join(", ")
        ));
    }
    let mut env = environment();
    // Another override may extend base.html: parse against the defaults.
    for (n, src) in TEMPLATES {
        if n != name {
            let _ = env.add_template(n, src);
        }
    }
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| match e.line() {
            Some(line) => format!("{name}:{line}: {}", e.detail().unwrap_or("syntax error")),
            None => format!("{name}: {e}"),
        })
}

static CURRENT: LazyLock<ArcSwap<Pages>> =
    LazyLock::new(|| ArcSwap::from_pointee(Pages::defaults()));

/// The pages in use (the defaults until a config installs others).
pub(crate) fn current() -> Arc<Pages> {
    CURRENT.load_full()
}

/// Use `pages` from now on (at start and on every config reload).
pub(crate) fn install(pages: Pages) {
    CURRENT.store(Arc::new(pages));
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn defaults_parse_and_escape() {
        for (name, src) in TEMPLATES {
            check(name, src).unwrap();
        }
        let p = Pages::defaults();
        let html = p.render(
            REFUSAL,
            context! { status => 403, title => "Access denied", message => "<script>x</script>", request_id => "\"id'" },
        );
        assert!(html.contains("<h1>Access denied</h1>"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&quot;id&#x27;"), "{html}");
        assert!(html.contains("Error 403"), "{html}");
    }

    #[test]
    fn overrides_replace_pages_and_are_checked() {
        let p = Pages::with_overrides(&[(
            REFUSAL.to_string(),
            "{% extends \"base.html\" %}{% block content %}<h1>ACME: {{ title }}</h1>{% endblock %}"
                .to_string(),
        )])
        .unwrap();
        let html = p.render(REFUSAL, context! { title => "<b>" });
        assert!(html.contains("<h1>ACME: &lt;b&gt;</h1>"), "{html}");
        // Other pages keep their default.
        assert!(p
            .render(SIGN_OUT, context! { action => "/x" })
            .contains("Sign out?"));
        let e = check("nope.html", "").unwrap_err();
        assert!(e.contains("not a template name"), "{e}");
        let e = check(REFUSAL, "line one\n{% if %}").unwrap_err();
        assert!(e.starts_with("refusal.html:2:"), "{e}");
        assert!(Pages::with_overrides(&[(REFUSAL.into(), "{{".into())]).is_err());
    }

    #[test]
    fn a_page_that_fails_to_render_falls_back_to_the_default() {
        // Parses, but fails at render time (an unknown filter is a parse error; a failing
        // call is not).
        let p =
            Pages::with_overrides(&[(SIGN_OUT.to_string(), "{{ action|int + none }}".to_string())])
                .unwrap();
        let html = p.render(SIGN_OUT, context! { action => "/x" });
        assert!(html.contains("Sign out?"), "{html}");
    }
}
