//! `local-front`: the local API Gateway and schedule, and a token tool.
//!
//! ```text
//! local-front serve            # serve on 127.0.0.1:$FRONT_PORT (default 3000)
//! local-front token [SUB] [EMAIL]
//! ```
//! Configuration is the product's own (see the README), plus `FRONT_PORT`, `LOCAL_JWT_KEY`
//! and `RECONCILE_EVERY_SECS`.

use std::sync::Arc;
use std::time::Duration;

use local_front::{Front, jwt, stack};
use research_relay::app::LiveApp;
use research_relay::clock::Clock;
use research_relay::config::Config;

/// Used when `LOCAL_JWT_KEY` is not set; local only.
const DEFAULT_JWT_KEY: &str = "local-development-jwt-key";

#[tokio::main]
async fn main() {
    research_relay::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let jwt_key = std::env::var("LOCAL_JWT_KEY").unwrap_or_else(|_| DEFAULT_JWT_KEY.to_owned());

    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(jwt_key).await,
        Some("token") => {
            let sub = args.get(1).map_or("demo-user", String::as_str);
            let email = args.get(2).map_or("reader@example.com", String::as_str);
            let now = Clock::system().now_secs();
            println!(
                "{}",
                jwt::issue(jwt_key.as_bytes(), sub, email, now, 12 * 3600)
            );
            Ok(())
        }
        _ => Err("usage: local-front serve | local-front token [SUB] [EMAIL]".to_owned()),
    };
    if let Err(error) = result {
        eprintln!("local-front: {error}");
        std::process::exit(1);
    }
}

async fn serve(jwt_key: String) -> Result<(), String> {
    let config = Config::from_env().map_err(|error| error.to_string())?;
    let port: u16 = std::env::var("FRONT_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(3000);
    let every: f64 = std::env::var("RECONCILE_EVERY_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(5.0);

    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secret = stack::secret_document(stack::LOCAL_PROVIDER_KEY, &[stack::LOCAL_SIGNING_KEY]);
    stack::prepare(&sdk_config, &config, &secret).await?;
    let app = LiveApp::from_config(config, Clock::system())
        .await
        .map_err(|error| error.to_string())?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|error| format!("cannot listen on 127.0.0.1:{port}: {error}"))?;
    let front = Arc::new(Front {
        app,
        jwt_key: jwt_key.into_bytes(),
    });
    let running = local_front::start(
        listener,
        front,
        Some(Duration::from_secs_f64(every.max(0.1))),
    )
    .await
    .map_err(|error| error.to_string())?;
    println!("front listening on {}", running.base_url);

    tokio::signal::ctrl_c()
        .await
        .map_err(|error| error.to_string())?;
    running.stop();
    Ok(())
}
