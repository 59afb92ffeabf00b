//! Integration tests of the gateway core through the real binary: routing and default deny,
//! path normalisation, header hygiene, proxying (WebSocket, HTTP/2, TLS upstreams, failures),
//! admin endpoints, config checking, shutdown and reload.

mod common;

#[path = "gateway/access.rs"]
mod access;
#[path = "gateway/admin.rs"]
mod admin;
#[path = "gateway/config.rs"]
mod config;
#[path = "gateway/headers.rs"]
mod headers;
#[path = "gateway/proxying.rs"]
mod proxying;
#[path = "gateway/routing.rs"]
mod routing;
#[path = "gateway/shaping.rs"]
mod shaping;
