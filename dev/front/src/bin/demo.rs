//! The client half of `make demo`: drives a running local stack end to end.
//!
//! 1. Submits the research question of `events/submit-job.json` through the front, waits for
//!    the webhook to finish the job, prints the job as `GET /jobs/{id}` returns it, and saves the
//!    e-mail SES received as `.eml` and `.html`.
//! 2. Tells the simulator to drop the webhook of the question in `events/submit-job-full.json`,
//!    submits it, and waits for the reconciler to finish and mail it instead.
//!
//! Reads `FRONT_PORT`, `SIMULATOR_PORT`, `MOTO_PORT`, `LOCAL_JWT_KEY` and `OUT_DIR`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use local_front::{jwt, mailbox};
use serde_json::{Value, json};

const OWNER: &str = "demo-user";
const RECIPIENT: &str = "reader@example.com";

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("demo failed: {error}");
        std::process::exit(1);
    }
}

struct Stack {
    http: reqwest::Client,
    front: String,
    simulator: String,
    moto: String,
    token: String,
    out_dir: PathBuf,
}

async fn run() -> Result<(), String> {
    let port = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let jwt_key =
        std::env::var("LOCAL_JWT_KEY").unwrap_or_else(|_| "local-development-jwt-key".into());
    let now = research_relay::clock::Clock::system().now_secs();
    let stack = Stack {
        http: reqwest::Client::new(),
        front: format!("http://127.0.0.1:{}", port("FRONT_PORT")?),
        simulator: format!("http://127.0.0.1:{}", port("SIMULATOR_PORT")?),
        moto: format!("http://127.0.0.1:{}", port("MOTO_PORT")?),
        token: jwt::issue(jwt_key.as_bytes(), OWNER, RECIPIENT, now, 3600),
        out_dir: PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| "out".into())),
    };
    std::fs::create_dir_all(&stack.out_dir)
        .map_err(|error| format!("creating the output folder: {error}"))?;
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");

    println!("\n== Job 1: delivered by webhook ==");
    let body = event_body(&events.join("submit-job.json"))?;
    let job = submit(&stack, &body).await?;
    let finished = wait_until_mailed(&stack, &job, Duration::from_secs(60)).await?;
    print_job(&finished);
    save_mail(&stack, &job).await?;

    println!("\n== Job 2: webhook dropped, finished by the reconciler ==");
    let body = event_body(&events.join("submit-job-full.json"))?;
    let question = last_user_message(&body).ok_or("submit-job-full.json has no user message")?;
    let rule = json!({"match": question, "webhook": "drop", "times": 1});
    stack
        .http
        .post(format!("{}/_sim/rules", stack.simulator))
        .json(&rule)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .map_err(|error| format!("setting the drop rule: {error}"))?;
    let job = submit(&stack, &body).await?;
    let finished = wait_until_mailed(&stack, &job, Duration::from_secs(90)).await?;
    print_job(&finished);
    let stats: Value = get_json(
        &stack.http,
        &format!("{}/_sim/stats", stack.simulator),
        None,
    )
    .await?;
    println!(
        "simulator: {} webhook(s) dropped, {} job GET(s) answered (the reconciler's polls)",
        stats["webhooks_dropped"], stats["requests"]["get"]
    );
    save_mail(&stack, &job).await?;
    Ok(())
}

fn event_body(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("reading {}: {error}", path.display()))?;
    let event: Value =
        serde_json::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))?;
    event["body"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no body", path.display()))
}

fn last_user_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    if let Some(query) = value["query"].as_str() {
        return Some(query.to_owned());
    }
    value["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|message| message["role"] == "user")?["content"]
        .as_str()
        .map(str::to_owned)
}

async fn submit(stack: &Stack, body: &str) -> Result<String, String> {
    let response = stack
        .http
        .post(format!("{}/jobs", stack.front))
        .bearer_auth(&stack.token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|error| format!("POST /jobs: {error}"))?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let job: Value = response
        .json()
        .await
        .map_err(|error| format!("POST /jobs answer: {error}"))?;
    if status.as_u16() != 202 {
        return Err(format!("POST /jobs answered {status}: {job}"));
    }
    println!(
        "POST /jobs -> {status}, Location: {location}, status {}",
        job["status"]
    );
    job["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no job id".into())
}

async fn wait_until_mailed(stack: &Stack, job_id: &str, limit: Duration) -> Result<Value, String> {
    let started = Instant::now();
    let mut last_status = String::new();
    loop {
        let job = get_json(
            &stack.http,
            &format!("{}/jobs/{job_id}", stack.front),
            Some(&stack.token),
        )
        .await?;
        let status = format!("{} / e-mail {}", job["status"], job["email"]["state"]);
        if status != last_status {
            println!("  {:>5.1}s  {status}", started.elapsed().as_secs_f64());
            last_status = status;
        }
        let finished = matches!(
            job["status"].as_str(),
            Some("COMPLETED" | "FAILED" | "EXPIRED")
        );
        let mailed = matches!(job["email"]["state"].as_str(), Some("SENT" | "REJECTED"));
        if finished && mailed {
            return Ok(job);
        }
        if started.elapsed() > limit {
            return Err(format!(
                "job {job_id} did not finish within {limit:?}: {job}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> Result<Value, String> {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .map_err(|error| format!("GET {url}: {error}"))?
        .json()
        .await
        .map_err(|error| format!("GET {url}: {error}"))
}

fn print_job(job: &Value) {
    let mut shown = job.clone();
    if let Some(report) = job["report"].as_str() {
        let preview: String = report.chars().take(400).collect();
        shown["report"] = json!(format!(
            "{preview}… ({} characters in all)",
            report.chars().count()
        ));
    }
    if let Some(sources) = job["sources"].as_array() {
        shown["sources"] = json!(format!(
            "{} sources, first: {}",
            sources.len(),
            sources
                .first()
                .map(|s| s["url"].to_string())
                .unwrap_or_default()
        ));
    }
    println!("GET /jobs/{} ->", job["id"].as_str().unwrap_or_default());
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
}

async fn save_mail(stack: &Stack, job_id: &str) -> Result<(), String> {
    let mails = mailbox::received_for_job(&stack.http, &stack.moto, job_id).await?;
    let [mail] = mails.as_slice() else {
        return Err(format!(
            "expected one e-mail for job {job_id}, SES received {}",
            mails.len()
        ));
    };
    let eml = stack.out_dir.join(format!("{job_id}.eml"));
    let html = stack.out_dir.join(format!("{job_id}.html"));
    std::fs::write(&eml, mail.raw.as_bytes())
        .map_err(|error| format!("writing {}: {error}", eml.display()))?;
    std::fs::write(&html, mail.html().unwrap_or_default())
        .map_err(|error| format!("writing {}: {error}", html.display()))?;
    println!(
        "e-mail to {} — subject: {}",
        mail.destinations.first().map(String::as_str).unwrap_or("?"),
        mail.subject().unwrap_or_default()
    );
    println!("  saved {}", eml.display());
    println!("  saved {}", html.display());
    Ok(())
}
