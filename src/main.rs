//! `authgate`: CLI → load config → build the Pingora server → run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use authgate::{config, demo, logging, server};

/// mimalloc rather than glibc malloc: Pingora and the header maps allocate several times
/// per request, and callgrind counts ~18 % fewer instructions per proxied request with it
/// (README, "Benchmarks").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An authentication gateway: OpenID Connect login and verified identity headers in front of
/// any HTTP app.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. SIGTERM/SIGINT drain and stop, SIGHUP reloads the config (all of it or, when a key needs a restart, none),
    /// SIGQUIT hands the listening sockets to a process started with --upgrade.
    Run {
        /// Path of the TOML config (see config.toml in the repository for every key).
        /// Default: $AUTHGATE_CONFIG, else ./config.toml.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Take the listening sockets over from the running gateway: start this process
        /// first, then send the old one SIGQUIT within 5 s (both use server.upgrade_socket).
        #[arg(long)]
        upgrade: bool,
        /// Once every listener is bound, write the actual addresses here (atomically) as
        /// JSON: {"listeners":["127.0.0.1:8080"],"admin":"127.0.0.1:9090","pid":1234}.
        /// With port 0 in listeners[].address or admin.address the kernel picks a free port,
        /// and this file (or the "ready" log line) says which. Default: $AUTHGATE_READY_FILE.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
        /// Reload when the config file or a file it names (`*_file` keys: secrets, keys, CA
        /// bundles) changes, as SIGHUP does; checked every 2 s, through symlinks, so a
        /// Kubernetes ConfigMap or Secret update is followed.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a config file; prints every error as FILE:LINE:COLUMN: KEY: MESSAGE, or on
    /// success a summary (listeners, routes and their protection, providers, store).
    Check {
        /// Path of the TOML config (same as -c).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Path of the TOML config. Default: $AUTHGATE_CONFIG, else ./config.toml.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// For CI: resolve no upstream name (online, one that does not resolve is a warning),
        /// and take secrets that are referenced but absent (unset ${VAR}, missing secret or
        /// TLS files) as present; all else is checked.
        #[arg(long)]
        offline: bool,
    },
    /// Run a local demo: the test OpenID provider (tests/idp, needs Node.js and `npm ci`
    /// there), an upstream that shows the headers it receives, and authgate in front.
    Demo {
        /// Port of the demo upstream on 127.0.0.1.
        #[arg(long, default_value_t = 3000)]
        upstream_port: u16,
        /// Do not start the demo provider (protected pages then answer 503).
        #[arg(long)]
        no_idp: bool,
    },
    /// List or revoke sessions through a running gateway's admin API (needs admin.token).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
        /// Config to take the admin address and token from. Default: $AUTHGATE_CONFIG, else
        /// ./config.toml.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// Admin API base URL (default: http://<admin.address> from the config).
        #[arg(long, global = true)]
        admin: Option<String>,
    },
    /// Run only the demo/echo upstream (used by the load script).
    Echo {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// A subject's live sessions, as JSON (metadata only, never tokens).
    List {
        #[arg(long)]
        subject: String,
    },
    /// End sessions on every replica: all of a subject's, or one by its id.
    Revoke {
        #[arg(long, required_unless_present = "id", conflicts_with = "id")]
        subject: Option<String>,
        /// Only the subject's sessions from this provider.
        #[arg(long, requires = "subject")]
        provider: Option<String>,
        /// A session id as listed by `sessions list`.
        #[arg(long)]
        id: Option<String>,
    },
}

/// `authgate sessions …`: the admin API over HTTP. The token comes from
/// `AUTHGATE_ADMIN_TOKEN`, else from the config (`admin.token` / `admin.token_file`).
fn sessions(action: SessionsAction, path: &Path, admin: Option<String>) -> ExitCode {
    let from_config = || config::load(path).map_err(|e| print_errors(&e)).ok();
    let mut loaded = None;
    let token = match std::env::var("AUTHGATE_ADMIN_TOKEN") {
        Ok(t) => t,
        Err(_) => {
            loaded = from_config();
            match loaded.as_ref().and_then(|c| c.admin_token.as_ref()) {
                Some(t) => t.expose().to_string(),
                None => {
                    eprintln!(
                        "error: no admin token: set AUTHGATE_ADMIN_TOKEN or admin.token in {}",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let base = match admin {
        Some(a) => a,
        None => match loaded.or_else(from_config) {
            Some(c) => format!("http://{}", c.admin_address),
            None => return ExitCode::FAILURE,
        },
    };
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let (method, target) = match &action {
        SessionsAction::List { subject } => (
            http::Method::GET,
            format!("/sessions?subject={}", enc(subject)),
        ),
        SessionsAction::Revoke { id: Some(id), .. } => {
            (http::Method::DELETE, format!("/sessions/{}", enc(id)))
        }
        SessionsAction::Revoke {
            subject, provider, ..
        } => {
            let mut t = format!(
                "/sessions?subject={}",
                enc(subject.as_deref().unwrap_or_default())
            );
            if let Some(p) = provider {
                t.push_str(&format!("&provider={}", enc(p)));
            }
            (http::Method::DELETE, t)
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let resp = reqwest::Client::new()
            .request(method, format!("{}{target}", base.trim_end_matches('/')))
            .bearer_auth(&token)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    match result {
        Ok((status, body)) if status.is_success() => {
            if body.is_empty() {
                println!("revoked");
            } else {
                println!("{body}");
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("error: {status}: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "error: cannot reach the admin API at {base}: {}",
                e.without_url()
            );
            ExitCode::FAILURE
        }
    }
}

/// The config file to use and where its name came from: the command line wins over
/// `AUTHGATE_CONFIG` (a container image sets it once), which wins over ./config.toml.
fn config_path(flag: Option<PathBuf>) -> (PathBuf, &'static str) {
    match (flag, std::env::var_os("AUTHGATE_CONFIG")) {
        (Some(p), _) => (p, "command line"),
        (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), "AUTHGATE_CONFIG"),
        (None, _) => (PathBuf::from("config.toml"), "default"),
    }
}

/// `authgate check`: every error, or what the config sets up.
fn check(path: &Path, from: &str, offline: bool) -> ExitCode {
    let mode = if offline {
        config::Mode::CheckOffline
    } else {
        config::Mode::Check
    };
    match config::load_as(path, mode) {
        Ok(c) => {
            println!(
                "{}: ok ({} listeners, {} upstreams, {} routes)",
                path.display(),
                c.listeners.len(),
                c.upstreams.len(),
                c.routes.len()
            );
            println!("config file: {} (from {from})", path.display());
            if offline {
                println!("offline: upstream names not resolved, absent secrets not read");
            } else {
                for w in c.unresolved_upstream_names() {
                    eprintln!("warning: {w}");
                }
            }
            for line in c.summary() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("config file: {} (from {from})", path.display());
            print_errors(&e);
            ExitCode::FAILURE
        }
    }
}

fn print_errors(e: &config::ConfigErrors) {
    for err in &e.0 {
        eprintln!("error: {err}");
    }
}

fn run(
    config: config::Config,
    path: Option<(PathBuf, &str)>,
    upgrade: bool,
    ready_file: Option<PathBuf>,
    watch: bool,
) -> ExitCode {
    logging::init(config.log.format, &config.log.level);
    if let Some((p, from)) = &path {
        tracing::info!("config file {} (from {from})", p.display());
    }
    let path = path.map(|(p, _)| p);
    let ready_file =
        ready_file.or_else(|| std::env::var_os("AUTHGATE_READY_FILE").map(PathBuf::from));
    match server::run(
        config,
        path,
        upgrade,
        ready_file,
        watch.then_some(std::time::Duration::from_secs(2)),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Start tests/idp/idp.js (form login) for the demo; `None` with a hint when it cannot run.
/// Looked up from the working directory (a source checkout, where ./demo.sh runs), not from
/// the build directory: a binary built elsewhere (the container image) names no dead path.
fn start_demo_idp() -> Option<std::process::Child> {
    let dir = Path::new("tests/idp");
    if !dir.join("node_modules/oidc-provider").is_dir() {
        eprintln!("warning: the demo provider is not installed: run `authgate demo` from a source checkout after `npm ci` in {} (./demo.sh does both); protected pages will answer 503", dir.display());
        return None;
    }
    let clients = r#"[{"client_id":"authgate","client_secret":"authgate-secret","redirect_uris":["http://localhost:8080/.authgate/callback","http://127.0.0.1:8080/.authgate/callback"],"post_logout_redirect_uris":["http://localhost:8080/","http://127.0.0.1:8080/"]}]"#;
    match std::process::Command::new("node")
        .arg("idp.js")
        .current_dir(dir)
        .env("IDP_PORT", "9400")
        .env("IDP_CLIENTS", clients)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("warning: cannot start the demo provider (node): {e}; protected pages will answer 503");
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sessions {
            action,
            config,
            admin,
        } => sessions(action, &config_path(config).0, admin),
        Command::Check {
            file,
            config,
            offline,
        } => {
            let (path, from) = config_path(file.or(config));
            check(&path, from, offline)
        }
        Command::Run {
            config,
            upgrade,
            ready_file,
            watch,
        } => {
            let (path, from) = config_path(config);
            match config::load(&path) {
                Ok(c) => run(c, Some((path, from)), upgrade, ready_file, watch),
                Err(e) => {
                    eprintln!("config file: {} (from {from})", path.display());
                    print_errors(&e);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            upstream_port,
            no_idp,
        } => demo(upstream_port, no_idp),
        Command::Echo { listen } => echo(listen),
    }
}

/// `authgate demo`: the echo upstream, the test provider (unless `no_idp`) and the gateway
/// with the built-in demo config, until Ctrl-C.
fn demo(upstream_port: u16, no_idp: bool) -> ExitCode {
    let src = demo::DEMO_CONFIG.replace("127.0.0.1:3000", &format!("127.0.0.1:{upstream_port}"));
    let c = match config::parse(Path::new("<demo>"), &src) {
        Ok(c) => c,
        Err(e) => {
            print_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    let upstream = match demo::spawn_echo_thread(([127, 0, 0, 1], upstream_port).into()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: demo upstream cannot listen on 127.0.0.1:{upstream_port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut idp = if no_idp { None } else { start_demo_idp() };
    let port = c.listeners[0].address.port();
    println!("authgate demo");
    println!("  open http://localhost:{port}/   (protected: you are sent to sign in)");
    if idp.is_some() {
        println!("  sign in as: alice (any password; groups admins, dev) or bob (groups dev)");
    }
    println!("  public route:  http://localhost:{port}/public/");
    println!("  who am I:      http://localhost:{port}/.authgate/userinfo");
    println!("  sign out:      http://localhost:{port}/.authgate/logout");
    println!("  upstream alone (no auth of its own): http://{upstream}/");
    println!(
        "  admin: http://{}/metrics  /healthz  /readyz",
        c.admin_address
    );
    println!("  Ctrl-C to stop");
    let code = run(c, None, false, None, false);
    if let Some(child) = idp.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    code
}

/// `authgate echo`: the echo upstream alone.
fn echo(listen: std::net::SocketAddr) -> ExitCode {
    logging::init(config::model::LogFormat::Text, "info");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => {
                println!("echo upstream on http://{listen}/");
                demo::serve_echo(l).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
