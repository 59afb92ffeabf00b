//! The request decision, one for every entry point (design decision 12).
//!
//! Proxy mode and forward-auth describe the request differently (the request itself, or the
//! front proxy's account of it), so both first build an [`Inbound`]: canonical host, canonical
//! path, method, query, the client's headers. From there one sequence decides, and each step
//! is a small pure function here, unit-tested below:
//!
//! 1. route: host, then longest path prefix (no route: 404, default deny);
//! 2. [`admit`]: checks that need no identity (a method in lower case; a method override
//!    where the policy or a deny rule names methods, or where some methods are public);
//! 3. public route or public method → [`screen`] (the deny rules as they apply to nobody,
//!    the policy's `source_ips`) and allow; else authenticate (bearer token or session cookie, in
//!    `Gateway::authenticate`, the only step with I/O);
//! 4. nobody → [`unauthenticated`]: a redirect to sign in or a 401 (503 when no provider
//!    the route accepts can take a sign-in now); on an optional route (`auth = "optional"`,
//!    [`screen`]ed first) nobody passes anonymously instead;
//! 5. [`authorize`]: CSRF for cookie sessions, then the route's deny rules, then its policy.
//!
//! `Gateway::decide` sequences them; nothing else decides whether a request passes.

use std::sync::{Arc, LazyLock};

use http::{HeaderMap, Method};

use super::routes::{Route, Runtime};
use crate::answer::Refusal;
use crate::config::model::Unauthenticated;
use crate::forwarded::ClientAddr;
use crate::host::Authority;
use crate::identity::Claims;
use crate::oidc::BearerIdentity;
use crate::path::CanonicalPath;
use crate::session::SessionRef;

/// The original request as the decision sees it, in canonical form.
pub(crate) struct Inbound<'a> {
    pub(crate) method: &'a Method,
    pub(crate) authority: &'a Authority,
    pub(crate) path: &'a CanonicalPath,
    /// Raw query string: never used for routing, only passed to the login URL and checked for
    /// `_method` and `access_token`.
    pub(crate) query: Option<&'a str>,
    /// The client's headers (identity and untrusted forwarding headers already removed).
    pub(crate) headers: &'a HeaderMap,
    /// The client reached us (or the front proxy) over HTTPS.
    pub(crate) https: bool,
    /// The client's address through trusted proxies (`source_ips`), worked out if asked.
    pub(crate) client: ClientAddr<'a>,
}

/// An authenticated caller.
pub(crate) enum Caller {
    Session(SessionRef),
    Bearer(Arc<BearerIdentity>),
}

impl Caller {
    pub(crate) fn claims(&self) -> &Claims {
        match self {
            Caller::Session(s) => &s.record.claims,
            Caller::Bearer(b) => &b.claims,
        }
    }

    /// The id of the provider that vouched for the caller.
    pub(crate) fn provider(&self) -> &str {
        match self {
            Caller::Session(s) => &s.record.provider,
            Caller::Bearer(b) => &b.provider,
        }
    }
}

/// Checks that hold whoever is calling.
pub(crate) fn admit(route: &Route, req: &Inbound) -> Result<(), Refusal> {
    // `delete` is not DELETE to a deny rule, but is to every framework that upper-cases the
    // method before dispatch: no such method passes at all.
    if req.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Refusal::BadMethod);
    }
    // Judged as POST here, run as DELETE upstream: refused wherever the method matters (a
    // policy or a deny rule on methods, or methods that pass without sign-in).
    let restricts = !route.public_methods.is_empty()
        || route
            .policy
            .as_ref()
            .is_some_and(crate::policy::Policy::restricts_methods)
        || route
            .deny
            .iter()
            .any(crate::policy::Policy::restricts_methods);
    if restricts && crate::policy::claims_method_override(req.headers, req.query) {
        return Err(Refusal::MethodOverride);
    }
    Ok(())
}

/// Whether someone could sign in for `route` now: one of the providers it accepts (any, when
/// it names none) is ready. `providers`: every configured provider's id and readiness.
pub(crate) fn sign_in_possible<'a>(
    route: &Route,
    mut providers: impl Iterator<Item = (&'a str, bool)>,
) -> bool {
    providers.any(|(id, ready)| {
        ready && (route.providers.is_empty() || route.providers.iter().any(|p| p == id))
    })
}

/// The answer for a protected route when nobody is signed in: a redirect to sign in or a 401;
/// a 503 when nobody can sign in now (`sign_in`: see [`sign_in_possible`]), since a redirect
/// towards a provider that is down could only loop or strand the browser on an error page.
pub(crate) fn unauthenticated(
    rt: &Runtime,
    route: &Route,
    req: &Inbound,
    sign_in: bool,
) -> Refusal {
    if !sign_in {
        return Refusal::ProviderUnavailable;
    }
    let redirect = match route.unauthenticated {
        // Worked out only here and for refusals: most requests never need it.
        Unauthenticated::Auto => crate::answer::audience(req.method, req.headers).navigation,
        Unauthenticated::Redirect => true,
        Unauthenticated::Status401 => false,
    };
    Refusal::Unauthenticated {
        login: login_url(rt, route, req.path.as_str(), req.query),
        redirect,
    }
}

/// Whether an identified caller may make this request.
pub(crate) fn authorize(
    rt: &Runtime,
    route: &Route,
    req: &Inbound,
    caller: &Caller,
    request_id: &str,
) -> Result<(), Refusal> {
    if let Caller::Session(_) = caller {
        if route.csrf
            && rt.csrf.enabled
            && crate::csrf::is_unsafe(req.method)
            && crate::csrf::is_cross_site(&rt.csrf, req.headers, req.https, req.authority)
        {
            tracing::info!(request_id, route = %route.id, provider = caller.provider(), sub = %caller.claims().sub(), user = %caller.claims().subject(), "cross-site request refused");
            return Err(Refusal::CrossSite);
        }
    }
    rules(route, req, Some(caller), request_id)
}

/// Nobody: what rules without an identity (`source_ips`) check for anonymous callers.
static ANONYMOUS: LazyLock<Claims> = LazyLock::new(Claims::default);

/// The rules that need no identity, for every caller of a public or optional route and of a
/// public method, before anyone is authenticated: the deny rules as they apply to an
/// anonymous caller (its address, the method) and the policy's `methods` and `source_ips`
/// (on public and optional routes validation admits only `source_ips`; on a public method of
/// a protected route the rest of the policy is about users, and nobody is signed in). Nothing to do (no
/// allocation, no address worked out) on a route without rules.
pub(crate) fn screen(route: &Route, req: &Inbound, request_id: &str) -> Result<(), Refusal> {
    if route.policy.is_none() && route.deny.is_empty() {
        return Ok(());
    }
    deny_rules(route, req, None, request_id)?;
    if let Some(policy) = &route.policy {
        let denial = if !policy.admits_method(req.method) {
            Some(crate::policy::Denial::Method)
        } else if !policy.admits_source(|| req.client.get()) {
            Some(crate::policy::Denial::SourceIp)
        } else {
            None
        };
        if let Some(denial) = denial {
            tracing::info!(request_id, route = %route.id, reason = denial.as_str(), client = ?req.client.get(), "denied by policy");
            return Err(Refusal::Forbidden);
        }
    }
    Ok(())
}

/// The deny rules in order (the first that matches refuses), then the policy. `caller`:
/// `None` for an anonymous caller.
fn rules(
    route: &Route,
    req: &Inbound,
    caller: Option<&Caller>,
    request_id: &str,
) -> Result<(), Refusal> {
    deny_rules(route, req, caller, request_id)?;
    let Some(policy) = &route.policy else {
        return Ok(());
    };
    let (provider, claims) = caller.map_or(("", &*ANONYMOUS), |c| (c.provider(), c.claims()));
    if let Err(denial) = policy.evaluate_from(provider, claims, req.method, || req.client.get()) {
        match caller {
            Some(c) => {
                tracing::info!(request_id, route = %route.id, provider, sub = %c.claims().sub(), user = %c.claims().subject(), reason = denial.as_str(), client = ?req.client.get(), "denied by policy")
            }
            None => {
                tracing::info!(request_id, route = %route.id, reason = denial.as_str(), client = ?req.client.get(), "denied by policy")
            }
        }
        return Err(Refusal::Forbidden);
    }
    Ok(())
}

/// The deny rules in order: the first that matches refuses.
fn deny_rules(
    route: &Route,
    req: &Inbound,
    caller: Option<&Caller>,
    request_id: &str,
) -> Result<(), Refusal> {
    let (provider, claims) = caller.map_or(("", &*ANONYMOUS), |c| (c.provider(), c.claims()));
    for (i, rule) in route.deny.iter().enumerate() {
        if rule.denies(provider, claims, req.method, || req.client.get()) {
            let keys = rule.keys();
            match caller {
                Some(c) => {
                    tracing::info!(request_id, route = %route.id, provider, sub = %c.claims().sub(), user = %c.claims().subject(), deny_rule = i, matched = %keys, client = ?req.client.get(), "denied by a deny rule")
                }
                None => {
                    tracing::info!(request_id, route = %route.id, deny_rule = i, matched = %keys, client = ?req.client.get(), "denied by a deny rule")
                }
            }
            return Err(Refusal::Forbidden);
        }
    }
    Ok(())
}

/// Where to sign in for `route`: with the route's provider when it accepts exactly one, or
/// the list the sign-in page should offer when it accepts several.
pub(crate) fn login_url(rt: &Runtime, route: &Route, path: &str, query: Option<&str>) -> String {
    let mut target = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut url = format!("{}login?rd={}", rt.gateway_prefix, enc(&target));
    match route.providers.as_slice() {
        [] => {}
        [one] => {
            url.push_str("&provider=");
            url.push_str(&enc(one));
        }
        several => {
            url.push_str("&providers=");
            url.push_str(&enc(&several.join(",")));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::front::CsrfSettings;
    use crate::oidc::BearerIdentity;
    use crate::policy::Policy;

    fn runtime() -> Runtime {
        let cfg = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n",
        )
        .unwrap();
        Runtime::new(&cfg, &crate::metrics::Metrics::new(), None)
    }

    fn route(rt: &Runtime, f: impl FnOnce(&mut Route)) -> Route {
        let base = rt.routes.lookup("h", "/").unwrap();
        let mut r = Route {
            id: base.id.clone(),
            upstream: base.upstream.clone(),
            public: false,
            public_methods: vec![],
            optional: false,
            pass_access_token: false,
            policy: None,
            deny: vec![],
            bearer: false,
            audiences: vec![],
            providers: vec![],
            identity_assertion: false,
            csrf: true,
            unauthenticated: Unauthenticated::Auto,
            claim_headers: None,
            shaping: None,
            duration: base.duration.clone(),
            upstream_duration: base.upstream_duration.clone(),
        };
        f(&mut r);
        r
    }

    struct Req {
        method: Method,
        authority: Authority,
        path: CanonicalPath,
        query: Option<String>,
        headers: HeaderMap,
        https: bool,
        client: Option<std::net::IpAddr>,
    }

    impl Req {
        fn new(method: &str, uri: &str, headers: &[(&str, &str)]) -> Self {
            let (path, query) = match uri.split_once('?') {
                Some((p, q)) => (p, Some(q.to_string())),
                None => (uri, None),
            };
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            Req {
                method: method.parse().unwrap(),
                authority: Authority::parse(b"app.example").unwrap(),
                path: crate::path::normalize(path, Default::default()).unwrap(),
                query,
                headers: h,
                https: true,
                client: None,
            }
        }

        fn from(mut self, ip: &str) -> Self {
            self.client = Some(ip.parse().unwrap());
            self
        }

        fn inbound(&self) -> Inbound<'_> {
            Inbound {
                method: &self.method,
                authority: &self.authority,
                path: &self.path,
                query: self.query.as_deref(),
                headers: &self.headers,
                https: self.https,
                client: ClientAddr::known(self.client),
            }
        }
    }

    fn bearer(subject: &str) -> Caller {
        Caller::Bearer(Arc::new(BearerIdentity {
            provider: "p".into(),
            claims: Claims {
                text: crate::identity::UserText::new("", subject),
                ..Claims::default()
            },
            headers: Box::default(),
        }))
    }

    fn methods_policy() -> Option<Policy> {
        Some(Policy {
            methods: vec![Method::GET, Method::POST],
            ..Policy::default()
        })
    }

    #[test]
    fn method_overrides_are_refused_only_where_methods_matter() {
        let rt = runtime();
        let strict = route(&rt, |r| r.policy = methods_policy());
        let preflight = route(&rt, |r| r.public_methods = vec![Method::OPTIONS]);
        let no_delete = route(&rt, |r| {
            r.deny = vec![Policy {
                methods: vec![Method::DELETE],
                ..Policy::default()
            }]
        });
        let open = route(&rt, |_| {});
        for (uri, headers) in [
            ("/x?_method=DELETE", vec![]),
            ("/x?a=1&%5Fmethod=DELETE", vec![]),
            ("/x", vec![("x-http-method-override", "DELETE")]),
            ("/x", vec![("X_HTTP_Method_Override", "DELETE")]),
            ("/x", vec![("x-method-override", "PUT")]),
        ] {
            let req = Req::new("POST", uri, &headers);
            for r in [&strict, &preflight, &no_delete] {
                assert_eq!(
                    admit(r, &req.inbound()),
                    Err(Refusal::MethodOverride),
                    "{uri} {headers:?}"
                );
            }
            assert_eq!(admit(&open, &req.inbound()), Ok(()));
        }
        assert_eq!(
            admit(&strict, &Req::new("POST", "/x?method=1", &[]).inbound()),
            Ok(())
        );
    }

    #[test]
    fn unauthenticated_redirects_navigations_and_obeys_the_route() {
        let rt = runtime();
        let nav = Req::new("GET", "/a/b?c=1", &[("sec-fetch-mode", "navigate")]);
        let api = Req::new("GET", "/a/b", &[("accept", "application/json")]);
        let auto = route(&rt, |_| {});
        let redirect_of = |r: Refusal| match r {
            Refusal::Unauthenticated { redirect, login } => {
                assert!(login.starts_with("/.authgate/login?rd=%2Fa%2Fb"), "{login}");
                redirect
            }
            other => panic!("{other:?}"),
        };
        assert!(redirect_of(unauthenticated(
            &rt,
            &auto,
            &nav.inbound(),
            true
        )));
        assert!(!redirect_of(unauthenticated(
            &rt,
            &auto,
            &api.inbound(),
            true
        )));
        let always = route(&rt, |r| r.unauthenticated = Unauthenticated::Redirect);
        assert!(redirect_of(unauthenticated(
            &rt,
            &always,
            &api.inbound(),
            true
        )));
        let never = route(&rt, |r| r.unauthenticated = Unauthenticated::Status401);
        assert!(!redirect_of(unauthenticated(
            &rt,
            &never,
            &nav.inbound(),
            true
        )));
        // Nobody can sign in now: 503 for every client, never a redirect to a dead provider.
        for (r, req) in [
            (&auto, &nav),
            (&always, &api),
            (&never, &nav),
            (&auto, &api),
        ] {
            assert_eq!(
                unauthenticated(&rt, r, &req.inbound(), false),
                Refusal::ProviderUnavailable
            );
        }
    }

    #[test]
    fn sign_in_is_possible_through_a_ready_provider_the_route_accepts() {
        let rt = runtime();
        let any = route(&rt, |_| {});
        let only_a = route(&rt, |r| r.providers = vec!["a".into()]);
        let a_or_b = route(&rt, |r| r.providers = vec!["a".into(), "b".into()]);
        let states = |a: bool, b: bool| [("a", a), ("b", b)].into_iter();
        assert!(sign_in_possible(&any, states(false, true)));
        assert!(!sign_in_possible(&any, states(false, false)));
        assert!(!sign_in_possible(&any, std::iter::empty()));
        assert!(
            !sign_in_possible(&only_a, states(false, true)),
            "b is not a's stand-in"
        );
        assert!(sign_in_possible(&only_a, states(true, false)));
        assert!(sign_in_possible(&a_or_b, states(false, true)));
        assert!(!sign_in_possible(&a_or_b, states(false, false)));
    }

    #[test]
    fn bearer_callers_skip_csrf_but_not_policy() {
        let mut rt = runtime();
        rt.csrf = CsrfSettings::default();
        let r = route(&rt, |r| {
            r.policy = Some(Policy {
                users: ["alice".to_string()].into(),
                ..Policy::default()
            })
        });
        let cross = Req::new("POST", "/x", &[("sec-fetch-site", "cross-site")]);
        assert_eq!(
            authorize(&rt, &r, &cross.inbound(), &bearer("alice"), "id"),
            Ok(())
        );
        assert_eq!(
            authorize(&rt, &r, &cross.inbound(), &bearer("mallory"), "id"),
            Err(Refusal::Forbidden)
        );
        let strict = route(&rt, |r| r.policy = methods_policy());
        assert_eq!(
            authorize(
                &rt,
                &strict,
                &Req::new("DELETE", "/x", &[]).inbound(),
                &bearer("a"),
                "id"
            ),
            Err(Refusal::Forbidden)
        );
    }

    fn caller(subject: &str, groups: &[&str]) -> Caller {
        Caller::Bearer(Arc::new(BearerIdentity {
            provider: "p".into(),
            claims: Claims {
                text: crate::identity::UserText::new("", subject),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Claims::default()
            },
            headers: Box::default(),
        }))
    }

    fn nets(v: &[&str]) -> Vec<ipnet::IpNet> {
        v.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn deny_rules_come_first_in_order_and_each_is_a_full_match() {
        let rt = runtime();
        let r = route(&rt, |r| {
            r.deny = vec![
                // Contractors may not delete.
                Policy {
                    groups: ["contractors".to_string()].into(),
                    methods: vec![Method::DELETE],
                    ..Policy::default()
                },
                // Nobody from the guest network.
                Policy {
                    source_ips: nets(&["192.0.2.0/24"]),
                    ..Policy::default()
                },
            ];
            // The policy would admit alice everywhere: deny wins.
            r.policy = Some(Policy {
                users: ["alice".to_string(), "carol".to_string()].into(),
                ..Policy::default()
            });
        });
        let get = Req::new("GET", "/x", &[]).from("10.0.0.1");
        let delete = Req::new("DELETE", "/x", &[]).from("10.0.0.1");
        let guest = Req::new("GET", "/x", &[]).from("192.0.2.9");
        let unknown = Req::new("GET", "/x", &[]);
        let alice = caller("alice", &["contractors"]);
        let carol = caller("carol", &["staff"]);
        let ok = |req: &Req, c: &Caller| authorize(&rt, &r, &req.inbound(), c, "id");
        assert_eq!(ok(&get, &alice), Ok(()));
        assert_eq!(ok(&delete, &alice), Err(Refusal::Forbidden), "rule 0");
        assert_eq!(ok(&delete, &carol), Ok(()), "rule 0 needs both keys");
        assert_eq!(ok(&guest, &carol), Err(Refusal::Forbidden), "rule 1");
        // An unknown address may be the guest network's: a deny on addresses holds.
        assert_eq!(ok(&unknown, &carol), Err(Refusal::Forbidden));
        // Deny on a route without a policy: everyone signed in but ...
        let open = route(&rt, |r| {
            r.deny = vec![Policy {
                users: ["mallory".to_string()].into(),
                ..Policy::default()
            }]
        });
        let m = caller("mallory", &[]);
        assert_eq!(
            authorize(&rt, &open, &get.inbound(), &m, "id"),
            Err(Refusal::Forbidden)
        );
        assert_eq!(authorize(&rt, &open, &get.inbound(), &carol, "id"), Ok(()));
        // The policy still applies after the deny rules.
        let dave = caller("dave", &[]);
        assert_eq!(ok(&get, &dave), Err(Refusal::Forbidden));
    }

    #[test]
    fn screen_holds_source_rules_for_anonymous_callers_and_costs_nothing_without() {
        let rt = runtime();
        let office = route(&rt, |r| {
            r.optional = true;
            r.policy = Some(Policy {
                source_ips: nets(&["10.0.0.0/8", "2001:db8::/32"]),
                ..Policy::default()
            });
        });
        let screen_of = |r: &Route, req: &Req| screen(r, &req.inbound(), "id");
        for ip in ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8::1"] {
            assert_eq!(
                screen_of(&office, &Req::new("GET", "/", &[]).from(ip)),
                Ok(()),
                "{ip}"
            );
        }
        for ip in ["11.0.0.1", "2001:db9::1", "::ffff:11.0.0.1"] {
            assert_eq!(
                screen_of(&office, &Req::new("GET", "/", &[]).from(ip)),
                Err(Refusal::Forbidden),
                "{ip}"
            );
        }
        // Unknown: not in any allowed network.
        assert_eq!(
            screen_of(&office, &Req::new("GET", "/", &[])),
            Err(Refusal::Forbidden)
        );
        let blocked = route(&rt, |r| {
            r.public = true;
            r.deny = vec![Policy {
                source_ips: nets(&["203.0.113.0/24"]),
                ..Policy::default()
            }];
        });
        assert_eq!(
            screen_of(&blocked, &Req::new("GET", "/", &[]).from("203.0.113.5")),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            screen_of(&blocked, &Req::new("GET", "/", &[]).from("198.51.100.5")),
            Ok(())
        );
        assert_eq!(
            screen_of(&blocked, &Req::new("GET", "/", &[])),
            Err(Refusal::Forbidden),
            "unknown: may be the blocked network"
        );
        // No rules: nothing is worked out, whatever the address.
        let plain = route(&rt, |r| r.optional = true);
        assert_eq!(screen_of(&plain, &Req::new("GET", "/", &[])), Ok(()));

        // A public method of a protected route: its policy's source_ips and its deny rules
        // hold for the anonymous caller; the policy's other keys are about signed-in users.
        let preflight = route(&rt, |r| {
            r.public_methods = vec![Method::GET, Method::OPTIONS];
            r.policy = Some(Policy {
                groups: ["staff".to_string()].into(),
                source_ips: nets(&["10.0.0.0/8"]),
                ..Policy::default()
            });
            r.deny = vec![
                Policy {
                    source_ips: nets(&["10.66.0.0/16"]),
                    ..Policy::default()
                },
                Policy {
                    methods: vec![Method::GET],
                    groups: ["contractors".to_string()].into(),
                    ..Policy::default()
                },
            ];
        });
        assert_eq!(
            screen_of(&preflight, &Req::new("GET", "/", &[]).from("10.1.2.3")),
            Ok(())
        );
        for (ip, why) in [
            (Some("192.0.2.1"), "outside the policy's source_ips"),
            (Some("10.66.1.1"), "a denied network"),
            (None, "unknown address"),
        ] {
            let mut req = Req::new("OPTIONS", "/", &[]);
            if let Some(ip) = ip {
                req = req.from(ip);
            }
            assert_eq!(
                screen_of(&preflight, &req),
                Err(Refusal::Forbidden),
                "{why}"
            );
        }
    }

    /// A public method outside the policy's `methods`: the policy holds for it too.
    #[test]
    fn a_public_method_the_policy_does_not_allow_is_refused() {
        let rt = runtime();
        let r = route(&rt, |r| {
            r.public_methods = vec![Method::DELETE, Method::GET];
            r.policy = Some(Policy {
                methods: vec![Method::GET],
                ..Policy::default()
            });
        });
        assert_eq!(
            screen(&r, &Req::new("GET", "/", &[]).inbound(), "id"),
            Ok(())
        );
        assert_eq!(
            screen(&r, &Req::new("DELETE", "/", &[]).inbound(), "id"),
            Err(Refusal::Forbidden)
        );
    }

    #[test]
    fn lower_case_methods_are_refused_and_a_deny_on_get_covers_head() {
        let rt = runtime();
        let open = route(&rt, |_| {});
        for m in ["delete", "Delete", "get", "pOST"] {
            assert_eq!(
                admit(&open, &Req::new(m, "/", &[]).inbound()),
                Err(Refusal::BadMethod),
                "{m}"
            );
        }
        for m in ["GET", "DELETE", "PROPFIND", "M-SEARCH"] {
            assert_eq!(
                admit(&open, &Req::new(m, "/", &[]).inbound()),
                Ok(()),
                "{m}"
            );
        }
        let no_get = route(&rt, |r| {
            r.public = true;
            r.deny = vec![Policy {
                methods: vec![Method::GET],
                ..Policy::default()
            }];
        });
        for m in ["GET", "HEAD"] {
            assert_eq!(
                screen(&no_get, &Req::new(m, "/", &[]).inbound(), "id"),
                Err(Refusal::Forbidden),
                "{m}"
            );
        }
        assert_eq!(
            screen(&no_get, &Req::new("POST", "/", &[]).inbound(), "id"),
            Ok(())
        );
        // An allow-list on GET still does not admit HEAD (fails closed).
        let get_only = Policy {
            methods: vec![Method::GET],
            ..Policy::default()
        };
        assert!(get_only
            .evaluate("p", &Claims::default(), &Method::HEAD)
            .is_err());
    }

    /// `decide` on an optional route of a gateway without providers (so nobody can be
    /// identified): anonymous callers pass, never a sign-in answer, and its `source_ips`
    /// rules hold for them; a protected route on the same gateway refuses them. (With
    /// providers, sessions and bearer tokens: the integration tests in
    /// tests/gateway/access.rs.)
    #[tokio::test]
    async fn optional_routes_pass_anonymous_callers() {
        let cfg = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n\
             [[routes]]\npath = \"/opt\"\nupstream = \"app\"\nauth = \"optional\"\n\
             [[routes]]\npath = \"/office\"\nupstream = \"app\"\nauth = \"optional\"\n\
             [routes.policy]\nsource_ips = [\"10.0.0.0/8\"]\n\
             [[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        )
        .unwrap();
        let rt = Arc::new(Runtime::new(&cfg, &crate::metrics::Metrics::new(), None));
        let gw = super::super::Gateway::new(
            Arc::new(arc_swap::ArcSwap::new(rt.clone())),
            Arc::new(crate::metrics::Metrics::new()),
        );
        let mut ctx = super::super::RequestCtx::new(rt.clone());
        let nav = [("sec-fetch-mode", "navigate")];
        let req = Req::new("POST", "/opt/x", &nav);
        assert!(matches!(
            gw.decide(&rt, &req.inbound(), &mut ctx).await,
            Ok(None)
        ));
        let office = Req::new("GET", "/office", &nav).from("10.0.0.7");
        assert!(matches!(
            gw.decide(&rt, &office.inbound(), &mut ctx).await,
            Ok(None)
        ));
        let outside = Req::new("GET", "/office", &nav).from("192.0.2.7");
        assert!(matches!(
            gw.decide(&rt, &outside.inbound(), &mut ctx).await,
            Err(Refusal::Forbidden)
        ));
        let req = Req::new("GET", "/x", &nav);
        assert!(matches!(
            gw.decide(&rt, &req.inbound(), &mut ctx).await,
            Err(Refusal::Unauthenticated { .. }) | Err(Refusal::ProviderUnavailable)
        ));
    }
}
