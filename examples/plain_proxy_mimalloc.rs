//! The benchmark baseline of `plain_proxy.rs` with the allocator authgate ships with
//! (mimalloc), so `benches/load.sh` can tell the allocator's share of a ratio from authgate's own
//! cost.
//!
//!     cargo run --release --example plain_proxy_mimalloc -- 127.0.0.1:8081 127.0.0.1:3000 [THREADS] [fair]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "plain_proxy.rs"]
mod plain;

fn main() {
    plain::main();
}
