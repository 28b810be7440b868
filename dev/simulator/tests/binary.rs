//! The `perplexity-simulator` binary: announces its address on stdout and serves there.

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

async fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the binary announces itself in time")
    .expect("read stdout");
    line
}

fn simulator() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_perplexity-simulator"));
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_binary_announces_a_loopback_url_and_serves_there() {
    let mut child = simulator()
        .args(["--port", "0", "--complete-after-ms", "10"])
        .spawn()
        .expect("start the binary");

    let line = first_line(&mut child).await;
    let url = line
        .trim_end()
        .strip_prefix("simulator listening on ")
        .expect("announcement format")
        .to_owned();
    let clock = common::client()
        .get(format!("{url}/_sim/clock"))
        .send()
        .await
        .expect("request the running binary");

    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(clock.status().as_u16(), 200);
    child.kill().await.expect("stop the binary");
}

#[tokio::test]
async fn the_port_can_come_from_the_environment() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port();
    let mut child = simulator()
        .env("SIMULATOR_PORT", free.to_string())
        .spawn()
        .expect("start the binary");

    let line = first_line(&mut child).await;

    assert_eq!(
        line.trim_end(),
        format!("simulator listening on http://127.0.0.1:{free}")
    );
    child.kill().await.expect("stop the binary");
}

#[tokio::test]
async fn a_bad_argument_is_refused_with_usage() {
    let output = simulator()
        .args(["--port", "not-a-port"])
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run the binary");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--port"), "{stderr}");
    assert!(stderr.contains("usage:"), "{stderr}");
}
