//! `perplexity-simulator`: serves the simulated provider on 127.0.0.1 until interrupted.
//!
//! ```text
//! perplexity-simulator [--port N] [--start-after-ms N] [--complete-after-ms N]
//!                      [--retry-base-ms N] [--max-attempts N] [--sources N]
//!                      [--get-delay-ms N]
//! ```
//! The port comes from `--port`, else `SIMULATOR_PORT`, else 4010; 0 picks a free one. Logs go
//! to stderr (`RUST_LOG` filters them); stdout gets the one line
//! `simulator listening on http://127.0.0.1:PORT` once requests can be sent, so scripts can
//! wait for it.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use perplexity_simulator::SimulatorConfig;
use tracing_subscriber::EnvFilter;

const DEFAULT_PORT: u16 = 4010;

const USAGE: &str = "usage: perplexity-simulator [--port N] [--start-after-ms N] \
[--complete-after-ms N] [--retry-base-ms N] [--max-attempts N] [--sources N] [--get-delay-ms N]
  --port N               port on 127.0.0.1 (default: $SIMULATOR_PORT or 4010; 0 = any free port)
  --start-after-ms N     time from creation to IN_PROGRESS (default 300)
  --complete-after-ms N  time from creation to COMPLETED (default 1500)
  --retry-base-ms N      first webhook retry delay, doubling after each failure (default 200)
  --max-attempts N       webhook attempts before giving up (default 8)
  --sources N            sources per report (default 8)
  --get-delay-ms N       wall-clock latency of every job GET (default 0)";

struct Args {
    port: u16,
    config: SimulatorConfig,
}

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a valid number"))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut port = match std::env::var("SIMULATOR_PORT") {
        Ok(value) => number("SIMULATOR_PORT", Some(value))?,
        Err(_) => DEFAULT_PORT,
    };
    let mut config = SimulatorConfig::default();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => port = number(&flag, args.next())?,
            "--start-after-ms" => {
                config.start_after = Duration::from_millis(number(&flag, args.next())?);
            }
            "--complete-after-ms" => {
                config.complete_after = Duration::from_millis(number(&flag, args.next())?);
            }
            "--retry-base-ms" => {
                config.webhook_retry_base = Duration::from_millis(number(&flag, args.next())?);
            }
            "--max-attempts" => config.webhook_max_attempts = number(&flag, args.next())?,
            "--sources" => config.default_sources = number(&flag, args.next())?,
            "--get-delay-ms" => {
                config.get_delay = Duration::from_millis(number(&flag, args.next())?);
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Some(Args { port, config }))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {address}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let simulator = match perplexity_simulator::start(listener, args.config).await {
        Ok(simulator) => simulator,
        Err(err) => {
            eprintln!("cannot start the simulator: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("simulator listening on {}", simulator.base_url);

    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C: {err}");
    }
    tracing::info!("shutting down");
    match simulator.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("server error: {err}");
            ExitCode::FAILURE
        }
    }
}
