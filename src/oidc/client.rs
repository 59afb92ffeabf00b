//! The HTTP client the gateway talks to one provider with (discovery, JWKS, token, userinfo,
//! introspection): fixed timeouts, no redirects, the provider's own trust roots, and a log
//! line that says why a connection failed.

use std::sync::Arc;

use anyhow::Context;

use crate::config::provider::ProviderSettings;

/// The HTTP client for one provider (discovery, JWKS, token, userinfo, introspection). Every
/// provider's client has the same timeouts, redirect policy (none) and user agent; only the
/// roots its TLS certificate may chain to differ: `ca_file` → exactly those certificates
/// instead of the bundled web roots; `system_trust_store = true` → the OS store as well.
///
/// Outbound proxy: reqwest's default, read from the environment when the client is built:
/// `HTTPS_PROXY` for https issuers, `HTTP_PROXY` for http ones, `ALL_PROXY` for both, and
/// `NO_PROXY` (hosts, `.domain` suffixes, IPs, CIDRs, `*`) to go direct. Loopback is not
/// exempt unless `NO_PROXY` names it; under CGI (`REQUEST_METHOD` set) no proxy is used.
pub(crate) fn provider_http(p: &ProviderSettings) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
        // The OS store only when asked (the feature turns it on by default).
        .tls_built_in_native_certs(p.tls.system_trust_store)
        .connector_layer(tower_layer::layer_fn({
            let provider: Arc<str> = p.id.as_str().into();
            move |inner| ConnectLog {
                inner,
                provider: provider.clone(),
            }
        }));
    if let Some(cas) = &p.tls.ca_der {
        b = b.tls_built_in_webpki_certs(false);
        for der in cas {
            let cert = reqwest::Certificate::from_der(der)
                .with_context(|| format!("provider {}: ca_file", p.id))?;
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .with_context(|| format!("HTTP client for provider {}", p.id))
}

/// Logs why a connection to a provider could not be made (TCP, proxy, TLS), with the whole
/// cause chain (`invalid peer certificate: UnknownIssuer`): reqwest's own error, which the
/// provider's log line carries, only says "error sending request".
#[derive(Clone)]
struct ConnectLog<S> {
    inner: S,
    provider: Arc<str>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, R> tower_service::Service<R> for ConnectLog<S>
where
    S: tower_service::Service<R, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, BoxError>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connect = self.inner.call(req);
        let provider = self.provider.clone();
        Box::pin(async move {
            connect.await.inspect_err(|e| {
                let mut cause = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    cause.push_str(": ");
                    cause.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::warn!(provider = %provider, error = %cause, "cannot connect to the provider");
            })
        })
    }
}
