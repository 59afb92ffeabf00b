//! What `authgate check` prints on success: listeners, routes with their protection and
//! policy, providers (with what their claims are taken to mean) and the session store, one plain line each, in config order. Tests and
//! CI scripts read it, so its wording is stable; it never shows a secret (Redis URLs can hold
//! passwords, so the store is named by its topology only).

use super::model::{
    Config, Pattern, Policy, RedisTopology, RouteSettings, SessionStore, Unauthenticated,
};
use crate::routing::HostPattern;

impl Config {
    /// The summary, one line per item, sections unindented and items indented by two.
    pub fn summary(&self) -> Vec<String> {
        let mut out = vec!["listeners:".to_string()];
        for l in &self.listeners {
            let kind = match (&l.tls, l.h2c) {
                (Some(_), _) => "https (HTTP/1.1, HTTP/2 by ALPN)",
                (None, true) => "http (HTTP/1.1, h2c)",
                (None, false) => "http",
            };
            out.push(format!("  {} {kind}", l.address));
        }
        out.push(format!("  admin {}", self.admin_address));
        out.push("routes:".to_string());
        if self.routes.is_empty() {
            out.push("  none: every request answers 404".to_string());
        }
        for r in &self.routes {
            out.push(format!("  {}", route(r)));
        }
        out.push("providers:".to_string());
        if self.providers.is_empty() {
            out.push("  none".to_string());
        }
        for p in &self.providers {
            out.push(format!(
                "  {}: issuer {} client_id {}",
                p.id, p.issuer, p.client_id
            ));
            // What its claims will be taken to mean, said once.
            out.extend(p.describe().into_iter().map(|line| format!("    {line}")));
        }
        out.push(format!("store: {}", store(self)));
        out.push(format!("gateway prefix: {}", self.gateway_prefix));
        out
    }
}

/// `id: host/path -> upstream: protection[; policy ...]`.
fn route(r: &RouteSettings) -> String {
    let host = match &r.host {
        HostPattern::Any => String::new(),
        HostPattern::Exact(h) => h.clone(),
        HostPattern::Wildcard(suffix) => format!("*{suffix}"),
    };
    let protection = if r.public {
        let mut p = "public".to_string();
        rules_text(&mut p, r);
        p
    } else if r.optional {
        let mut p = "optional sign-in (anonymous callers pass)".to_string();
        if r.bearer {
            p.push_str(&format!(
                "; bearer token (audiences {})",
                r.audiences.join(", ")
            ));
        }
        if !r.providers.is_empty() {
            p.push_str(&format!("; providers {}", r.providers.join(", ")));
        }
        rules_text(&mut p, r);
        p
    } else {
        let unauthenticated = match r.unauthenticated {
            Unauthenticated::Auto => "auto",
            Unauthenticated::Redirect => "redirect",
            Unauthenticated::Status401 => "401",
        };
        let mut p = format!("sign-in (unauthenticated = {unauthenticated})");
        if r.bearer {
            p = format!("bearer token (audiences {}) or {p}", r.audiences.join(", "));
        }
        if !r.providers.is_empty() {
            p.push_str(&format!("; providers {}", r.providers.join(", ")));
        }
        if r.policy.is_none() {
            p.push_str("; any signed-in user");
        }
        rules_text(&mut p, r);
        if !r.public_methods.is_empty() {
            let methods: Vec<&str> = r.public_methods.iter().map(|m| m.as_str()).collect();
            p.push_str(&format!("; public for {}", methods.join(", ")));
        }
        p
    };
    let mut line = format!("{}: {host}{} -> {}: {protection}", r.id, r.path, r.upstream);
    if let Some(c) = &r.claim_headers {
        line.push_str(&format!("; sends {}", claim_headers_text(c)));
    }
    line
}

/// The names of the claim headers a route sends (never a value).
fn claim_headers_text(c: &super::model::ClaimHeaders) -> String {
    use super::model::IdTokenTo;
    let mut names: Vec<String> = c
        .claims
        .iter()
        .map(|(n, claim)| format!("{} ({claim})", n.name()))
        .collect();
    if let Some(p) = &c.prefix {
        match &c.prefix_allow {
            Some(allow) => names.push(format!("{p}<claim> for {}", allow.join(", "))),
            None => names.push(format!("{p}<claim>")),
        }
    }
    if let Some(r) = &c.remote_user {
        names.push(format!(
            "{} ({})",
            r.header.name(),
            r.claim.as_deref().unwrap_or("the user")
        ));
    }
    match &c.id_token {
        Some(IdTokenTo::Header(h)) => names.push(format!("{} (ID token)", h.name())),
        Some(IdTokenTo::Authorization) => names.push("authorization (Bearer ID token)".into()),
        None => {}
    }
    if c.basic_auth.is_some() {
        names.push("authorization (Basic)".into());
    }
    if c.x_auth_request {
        names.push("x-auth-request-*".into());
    }
    names.join(", ")
}

/// `; deny [...]` for each deny rule, then `; policy ...`.
fn rules_text(p: &mut String, r: &RouteSettings) {
    for (i, rule) in r.deny.iter().enumerate() {
        p.push_str(&format!("; deny[{i}] {}", policy_text(rule)));
    }
    if let Some(policy) = &r.policy {
        p.push_str(&format!("; policy {}", policy_text(policy)));
    }
}

/// Every key of a policy that is set, values sorted: `groups = [admins, dev] methods = [GET]`.
fn policy_text(p: &Policy) -> String {
    let sorted = |set: &std::collections::HashSet<String>| {
        let mut v: Vec<&str> = set.iter().map(String::as_str).collect();
        v.sort_unstable();
        v.join(", ")
    };
    let mut parts = Vec::new();
    for (key, set) in [
        ("providers", &p.providers),
        ("users", &p.users),
        ("emails", &p.emails),
        ("email_domains", &p.email_domains),
        ("groups", &p.groups),
    ] {
        if !set.is_empty() {
            parts.push(format!("{key} = [{}]", sorted(set)));
        }
    }
    if !p.methods.is_empty() {
        let m: Vec<&str> = p.methods.iter().map(|m| m.as_str()).collect();
        parts.push(format!("methods = [{}]", m.join(", ")));
    }
    if !p.claims.is_empty() {
        let c: Vec<String> = p
            .claims
            .iter()
            .map(|c| format!("{} = {}", c.claim, c.value))
            .collect();
        parts.push(format!("claims = [{}]", c.join(", ")));
    }
    if !p.email_patterns.is_empty() {
        let e: Vec<&str> = p.email_patterns.iter().map(pattern_text).collect();
        parts.push(format!("email_patterns = [{}]", e.join(", ")));
    }
    if !p.claim_patterns.is_empty() {
        let c: Vec<String> = p
            .claim_patterns
            .iter()
            .map(|c| format!("{} ~ {}", c.claim, c.written.join(" | ")))
            .collect();
        parts.push(format!("claim_patterns = [{}]", c.join(", ")));
    }
    if !p.source_ips.is_empty() {
        let n: Vec<String> = p.source_ips.iter().map(|n| n.to_string()).collect();
        parts.push(format!("source_ips = [{}]", n.join(", ")));
    }
    parts.join(" ")
}

/// A pattern as written (without the anchors validation wrapped it in).
fn pattern_text(p: &Pattern) -> &str {
    let s = p.0.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
}

fn store(c: &Config) -> String {
    match (c.session.store, &c.session.redis) {
        (SessionStore::Memory, _) => "memory (this process only)".to_string(),
        (SessionStore::Redis, Some(RedisTopology::Standalone(_))) => {
            "redis (one server)".to_string()
        }
        (SessionStore::Redis, Some(RedisTopology::Sentinel { sentinels, master })) => format!(
            "redis (Sentinel: {} sentinels, primary {master:?})",
            sentinels.len()
        ),
        (SessionStore::Redis, Some(RedisTopology::Cluster { nodes })) => {
            format!("redis (Cluster: {} seed nodes)", nodes.len())
        }
        (SessionStore::Redis, None) => "redis".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn summary_names_protection_policy_and_store_without_secrets() {
        let src = "[session]\nstore = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:6379\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[[providers]]\nid = \"corp\"\nissuer = \"https://idp.example\"\nclient_id = \"gw\"\n\n[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\nid = \"pub\"\npath = \"/public\"\nupstream = \"app\"\npublic = true\n\n[[routes]]\nid = \"api\"\nhost = \"*.example.com\"\npath = \"/api\"\nupstream = \"app\"\nbearer = true\naudiences = [\"api\"]\n[routes.policy]\ngroups = [\"dev\", \"admins\"]\nmethods = [\"GET\"]\n";
        let c = super::super::parse(Path::new("t.toml"), src).unwrap();
        let lines = c.summary();
        let text: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with("    "))
            .map(String::as_str)
            .collect();
        let text = text.join("\n");
        assert_eq!(
            text,
            "listeners:\n  127.0.0.1:8080 http\n  admin 127.0.0.1:9090\nroutes:\n  pub: /public -> app: public\n  api: *.example.com/api -> app: bearer token (audiences api) or sign-in (unauthenticated = auto); policy groups = [admins, dev] methods = [GET]\nproviders:\n  corp: issuer https://idp.example client_id gw\nstore: redis (one server)\ngateway prefix: /.authgate/"
        );
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn summary_shows_optional_routes_deny_rules_and_patterns() {
        let src = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\nid = \"home\"\npath = \"/home\"\nupstream = \"app\"\nauth = \"optional\"\n[routes.policy]\nsource_ips = [\"10.0.0.0/8\"]\n\n[[routes]]\nid = \"app\"\nupstream = \"app\"\n[routes.policy]\nemail_patterns = [\"[^@]+@corp\\\\.example\"]\nclaim_patterns = { dept = [\"eng-.*\", \"ops\"] }\n[[routes.deny]]\ngroups = [\"contractors\"]\nmethods = [\"DELETE\"]\n";
        let c = super::super::parse(Path::new("t.toml"), src).unwrap();
        let lines = c.summary();
        let routes: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("  home") || l.starts_with("  app"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            routes,
            [
                "  home: /home -> app: optional sign-in (anonymous callers pass); policy source_ips = [10.0.0.0/8]",
                "  app: / -> app: sign-in (unauthenticated = auto); deny[0] groups = [contractors] methods = [DELETE]; policy email_patterns = [[^@]+@corp\\.example] claim_patterns = [dept ~ eng-.* | ops]",
            ]
        );
    }
}
