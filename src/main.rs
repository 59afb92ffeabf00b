//! `authgate`: CLI → load config → build the Pingora server → run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use authgate::{config, demo, logging, server};

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
    /// Run the gateway. SIGTERM/SIGINT drain and stop, SIGHUP reloads routes and upstreams.
    Run {
        /// Path of the TOML config (see config.toml in the repository for every key).
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Validate a config file; prints every error as FILE:LINE:COLUMN: KEY: MESSAGE.
    Check {
        /// Path of the TOML config.
        config: PathBuf,
    },
    /// Run a local demo: an upstream that shows the headers it receives, behind authgate.
    Demo {
        /// Port of the demo upstream on 127.0.0.1.
        #[arg(long, default_value_t = 3000)]
        upstream_port: u16,
    },
    /// Run only the demo/echo upstream (used by the load script).
    Echo {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
    },
}

fn print_errors(e: &config::ConfigErrors) {
    for err in &e.0 {
        eprintln!("error: {err}");
    }
}

fn run(config: config::Config, path: Option<PathBuf>) -> ExitCode {
    logging::init(config.log.format, &config.log.level);
    match server::run(config, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config: path } => match config::load(&path) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listeners, {} upstreams, {} routes)",
                    path.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_errors(&e);
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => match config::load(&path) {
            Ok(c) => run(c, Some(path)),
            Err(e) => {
                print_errors(&e);
                ExitCode::FAILURE
            }
        },
        Command::Demo { upstream_port } => {
            let src =
                demo::DEMO_CONFIG.replace("127.0.0.1:3000", &format!("127.0.0.1:{upstream_port}"));
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
                    eprintln!(
                        "error: demo upstream cannot listen on 127.0.0.1:{upstream_port}: {e}"
                    );
                    return ExitCode::FAILURE;
                }
            };
            let gw = c.listeners[0].address;
            println!("authgate demo");
            println!("  upstream (no auth of its own): http://{upstream}/");
            println!("  through authgate, public route: http://{gw}/public/");
            println!("  through authgate, protected:    http://{gw}/   (sign-in required)");
            println!(
                "  admin: http://{}/metrics  /healthz  /readyz",
                c.admin_address
            );
            println!("  Ctrl-C to stop");
            run(c, None)
        }
        Command::Echo { listen } => {
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
    }
}
