//! The provider API as the product's client sees it: create, get, list, delete, idempotency,
//! the lifecycle on the simulator clock, retention, generated reports and HTTP faults.

mod common;

use std::time::Duration;

use common::{
    API_KEY, FINISH, client, control, control_get, create_body, create_job, eventually,
    frozen_config, get_job, json_of, start_simulator,
};
use perplexity_simulator::SimulatorConfig;
use serde_json::{Value, json};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn create_answers_a_created_job_that_get_returns() {
    let sim = start_simulator(frozen_config()).await;

    let job = create_job(&sim, &create_body("Rents in Zürich", None, None)).await;
    let (status, fetched) = get_job(&sim, job["id"].as_str().expect("id")).await;

    assert_eq!(job["status"], "CREATED");
    assert_eq!(job["model"], "sonar-deep-research");
    assert!(job["created_at"].is_i64());
    for field in [
        "started_at",
        "completed_at",
        "failed_at",
        "error_message",
        "response",
    ] {
        assert!(job[field].is_null(), "{field} should be null: {job}");
    }
    assert_eq!(job["id"].as_str().map(str::len), Some(36));
    assert_eq!(status, 200);
    assert_eq!(fetched, job);
}

#[tokio::test]
async fn every_endpoint_needs_a_bearer_token() {
    let sim = start_simulator(frozen_config()).await;
    let http = client();
    let body = create_body("q", None, None);
    let requests = [
        http.post(sim.url("/async/chat/completions")).json(&body),
        http.get(sim.url("/async/chat/completions")),
        http.get(sim.url("/async/chat/completions/abc")),
        http.delete(sim.url("/async/chat/completions/abc")),
        http.get(sim.url("/async/chat/completions"))
            .header("authorization", "Bearer "),
        http.get(sim.url("/async/chat/completions"))
            .header("authorization", "Basic dXNlcjpwYXNz"),
    ];

    for request in requests {
        let (status, error) = json_of(request.send().await.expect("request")).await;

        assert_eq!(status, 401);
        assert_eq!(error["error"]["type"], "unauthorized");
        assert_eq!(error["error"]["code"], 401);
    }
    let stats = sim.stats();
    assert_eq!(stats.jobs_created, 0);
    assert_eq!(stats.requests.list, 3);
}

#[tokio::test]
async fn an_unknown_model_is_refused_like_the_provider_does() {
    let sim = start_simulator(frozen_config()).await;
    let mut body = create_body("q", None, None);
    body["request"]["model"] = json!("sonar-deep-research-online");

    let response = client()
        .post(sim.url("/async/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .expect("request");
    let (status, error) = json_of(response).await;

    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_model");
    assert_eq!(error["error"]["code"], 400);
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("Invalid model 'sonar-deep-research-online'."));
    assert_eq!(sim.stats().jobs_created, 0);
}

#[tokio::test]
async fn malformed_bodies_are_client_errors_and_create_nothing() {
    let sim = start_simulator(frozen_config()).await;
    let cases: [(&str, u16); 5] = [
        ("", 400),
        (r#"{"request":{"model":"sonar""#, 400),
        (r#"{"request":{"messages":[]}}"#, 422),
        (r#"{"query":"x"}"#, 422),
        (
            r#"{"request":{"model":"sonar","messages":[]},"webhook":{"url":"https://hooks.example.com/x","secret":"s"}}"#,
            422,
        ),
    ];

    for (body, expected) in cases {
        let response = client()
            .post(sim.url("/async/chat/completions"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let (status, error) = json_of(response).await;

        assert_eq!(status, expected, "{body} answered {error}");
        if expected == 422 {
            assert!(error["detail"][0]["loc"].is_array(), "{error}");
        }
    }
    assert_eq!(sim.stats().jobs_created, 0);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_existing_job() {
    let sim = start_simulator(frozen_config()).await;
    let body = create_body("Heat pumps in 東京", Some("01JOB-A"), None);

    let first = create_job(&sim, &body).await;
    let second = create_job(&sim, &body).await;
    let other_key = json_of(
        client()
            .post(sim.url("/async/chat/completions"))
            .bearer_auth("another-account")
            .json(&body)
            .send()
            .await
            .expect("request"),
    )
    .await
    .1;

    assert_eq!(first["id"], second["id"]);
    assert_ne!(first["id"], other_key["id"]);
    let stats = sim.stats();
    assert_eq!(stats.jobs_created, 2);
    assert_eq!(stats.idempotent_replays, 1);
    let found = control_get(&sim, "/_sim/jobs?idempotency_key=01JOB-A").await;
    assert_eq!(found["jobs"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn status_follows_the_simulator_clock() {
    let sim = start_simulator(frozen_config()).await;
    let job = create_job(&sim, &create_body("Grid batteries", None, None)).await;
    let id = job["id"].as_str().expect("id");

    sim.advance_clock(Duration::from_secs(3601));
    let (_, running) = get_job(&sim, id).await;
    let (_, clock) = control(&sim, "/_sim/clock", json!({ "advance_secs": 3600 })).await;
    let (_, done) = get_job(&sim, id).await;

    assert_eq!(running["status"], "IN_PROGRESS");
    assert!(running["started_at"].is_i64());
    assert!(running["response"].is_null());
    assert_eq!(clock["offset_secs"], 7201);
    assert_eq!(done["status"], "COMPLETED");
    assert!(done["completed_at"].as_i64() >= done["started_at"].as_i64());
    assert_eq!(done["response"]["model"], "sonar-deep-research");
    assert_eq!(done["response"]["object"], "chat.completion");
}

#[tokio::test]
async fn jobs_also_finish_on_their_own_in_real_time() {
    let config = perplexity_simulator::SimulatorConfig {
        start_after: Duration::from_millis(20),
        complete_after: Duration::from_millis(60),
        tick: Duration::from_millis(10),
        ..perplexity_simulator::SimulatorConfig::default()
    };
    let sim = start_simulator(config).await;
    let job = create_job(&sim, &create_body("q", None, None)).await;
    let id = job["id"].as_str().expect("id").to_owned();

    let done = common::eventually("the job to complete", || async {
        let (_, job) = get_job(&sim, &id).await;
        (job["status"] == "COMPLETED").then_some(job)
    })
    .await;

    assert!(done["response"].is_object());
}

#[tokio::test]
async fn a_completed_report_looks_like_a_deep_research_answer() {
    let sim = start_simulator(frozen_config()).await;
    let job = create_job(
        &sim,
        &create_body("Cold-climate heat pumps: performance", None, None),
    )
    .await;
    sim.advance_clock(FINISH);

    let (_, done) = get_job(&sim, job["id"].as_str().expect("id")).await;
    let response = &done["response"];
    let content = response["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let citations = response["citations"].as_array().expect("citations");
    let results = response["search_results"].as_array().expect("results");

    assert!(content.starts_with("<think>\n"));
    let (_, report) = content.split_once("</think>\n\n").expect("think block");
    for needle in [
        "# ", "## ", "- **", "|---|", "Zürich", "naïve", "東京", "—", "[1]",
    ] {
        assert!(report.contains(needle), "report lacks {needle:?}");
    }
    assert_eq!(citations.len(), 8);
    assert_eq!(results.len(), 8);
    assert!(report.contains("[8]") && !report.contains("[9]"));
    for (citation, result) in citations.iter().zip(results) {
        assert_eq!(citation, &result["url"]);
        assert!(result["title"].is_string());
        assert!(result["date"].is_string() || result["date"].is_null());
    }
    let usage = &response["usage"];
    for field in [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "reasoning_tokens",
        "num_search_queries",
    ] {
        assert!(usage[field].as_u64().is_some_and(|n| n > 0), "{field}");
    }
    for field in [
        "input_tokens_cost",
        "output_tokens_cost",
        "request_cost",
        "total_cost",
    ] {
        assert!(usage["cost"][field].is_f64(), "{field}");
    }
}

#[tokio::test]
async fn rules_set_report_size_and_source_count() {
    let sim = start_simulator(frozen_config()).await;
    let (status, _) = control(
        &sim,
        "/_sim/rules",
        json!({ "match": "big", "report_bytes": 450_000, "sources": 50 }),
    )
    .await;
    let big = create_job(&sim, &create_body("a big report please", None, None)).await;
    let small = create_job(&sim, &create_body("a short one", None, None)).await;
    sim.advance_clock(FINISH);

    let (_, big) = get_job(&sim, big["id"].as_str().expect("id")).await;
    let (_, small) = get_job(&sim, small["id"].as_str().expect("id")).await;

    assert_eq!(status, 200);
    let content = |job: &Value| {
        job["response"]["choices"][0]["message"]["content"]
            .as_str()
            .map(str::len)
            .unwrap_or(0)
    };
    assert!(
        (450_000..460_000).contains(&content(&big)),
        "{}",
        content(&big)
    );
    assert!(content(&small) < 20_000);
    assert_eq!(
        big["response"]["search_results"].as_array().map(Vec::len),
        Some(50)
    );
    assert_eq!(
        small["response"]["citations"].as_array().map(Vec::len),
        Some(8)
    );
}

#[tokio::test]
async fn a_fail_rule_finishes_the_job_as_failed_with_its_message() {
    let sim = start_simulator(frozen_config()).await;
    control(
        &sim,
        "/_sim/rules",
        json!({ "outcome": "fail", "fail_message": "quota exhausted", "times": 1 }),
    )
    .await;
    let failing = create_job(&sim, &create_body("first", None, None)).await;
    let normal = create_job(&sim, &create_body("second", None, None)).await;
    sim.advance_clock(FINISH);

    let (_, failing) = get_job(&sim, failing["id"].as_str().expect("id")).await;
    let (_, normal) = get_job(&sim, normal["id"].as_str().expect("id")).await;

    assert_eq!(failing["status"], "FAILED");
    assert_eq!(failing["error_message"], "quota exhausted");
    assert!(failing["failed_at"].is_i64());
    assert!(failing["response"].is_null());
    assert_eq!(normal["status"], "COMPLETED");
}

#[tokio::test]
async fn a_response_rule_completes_a_job_without_a_usable_result() {
    let sim = start_simulator(frozen_config()).await;
    control(
        &sim,
        "/_sim/rules",
        json!({ "match": "missing", "response": "missing" }),
    )
    .await;
    control(
        &sim,
        "/_sim/rules",
        json!({ "match": "empty", "response": "empty" }),
    )
    .await;
    let missing = create_job(&sim, &create_body("missing result", None, None)).await;
    let empty = create_job(&sim, &create_body("empty result", None, None)).await;
    let normal = create_job(&sim, &create_body("normal result", None, None)).await;
    sim.advance_clock(FINISH);

    let (_, missing) = get_job(&sim, missing["id"].as_str().expect("id")).await;
    let (_, empty) = get_job(&sim, empty["id"].as_str().expect("id")).await;
    let (_, normal) = get_job(&sim, normal["id"].as_str().expect("id")).await;

    assert_eq!(missing["status"], "COMPLETED");
    assert!(missing["completed_at"].is_i64());
    assert!(missing["response"].is_null(), "{missing}");
    assert_eq!(empty["status"], "COMPLETED");
    assert_eq!(empty["response"]["choices"][0]["message"]["content"], "");
    assert!(empty["response"]["usage"].is_object());
    let content = normal["response"]["choices"][0]["message"]["content"]
        .as_str()
        .expect("a normal job keeps its report");
    assert!(content.len() > 100);
}

#[tokio::test]
async fn a_get_delay_holds_job_reads_and_nothing_else() {
    let sim = start_simulator(SimulatorConfig {
        get_delay: Duration::from_secs(3600),
        ..frozen_config()
    })
    .await;
    let job = create_job(&sim, &create_body("q", None, None)).await;
    let id = job["id"].as_str().expect("id").to_owned();

    let held = tokio::spawn({
        let url = sim.url(&format!("/async/chat/completions/{id}"));
        async move { client().get(url).bearer_auth(API_KEY).send().await }
    });
    let arrived = eventually("the GET to reach the simulator", || async {
        (sim.stats().requests.get == 1).then_some(())
    })
    .await;
    let listed = client()
        .get(sim.url("/async/chat/completions"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("list");

    assert_eq!(arrived, ());
    assert_eq!(listed.status().as_u16(), 200);
    assert!(
        !held.is_finished(),
        "the GET answered before its hour-long delay"
    );
    held.abort();
}

#[tokio::test]
async fn results_expire_after_seven_days_on_the_simulator_clock() {
    let sim = start_simulator(frozen_config()).await;
    let job = create_job(&sim, &create_body("q", None, None)).await;
    let id = job["id"].as_str().expect("id");

    sim.advance_clock(DAY * 6);
    let (before, _) = get_job(&sim, id).await;
    sim.advance_clock(DAY);
    let (after, error) = get_job(&sim, id).await;
    let list = json_of(
        client()
            .get(sim.url("/async/chat/completions"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("list"),
    )
    .await
    .1;
    let delete = client()
        .delete(sim.url(&format!("/async/chat/completions/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("delete");

    assert_eq!(before, 200);
    assert_eq!(after, 404);
    assert_eq!(error["error"]["code"], 404);
    assert_eq!(list["requests"], json!([]));
    assert_eq!(delete.status().as_u16(), 404);
}

#[tokio::test]
async fn listing_pages_through_the_callers_jobs_newest_first() {
    let sim = start_simulator(frozen_config()).await;
    let mut created = Vec::new();
    for n in 0..5 {
        let job = create_job(&sim, &create_body(&format!("question {n}"), None, None)).await;
        created.push(job["id"].as_str().expect("id").to_owned());
    }
    client()
        .post(sim.url("/async/chat/completions"))
        .bearer_auth("someone-else")
        .json(&create_body("not mine", None, None))
        .send()
        .await
        .expect("create");

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(token) => format!("/async/chat/completions?limit=2&next_token={token}"),
            None => "/async/chat/completions?limit=2".to_owned(),
        };
        let request = client().get(sim.url(&path)).bearer_auth(API_KEY);
        let (status, page) = json_of(request.send().await.expect("list")).await;
        assert_eq!(status, 200);
        pages += 1;
        for summary in page["requests"].as_array().expect("requests") {
            assert_eq!(summary["status"], "CREATED");
            assert!(summary.get("response").is_none());
            seen.push(summary["id"].as_str().expect("id").to_owned());
        }
        match page["next_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }

    created.reverse();
    assert_eq!(seen, created);
    assert_eq!(pages, 3);
    let bad = client()
        .get(sim.url("/async/chat/completions?next_token=garbage"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("list");
    assert_eq!(bad.status().as_u16(), 400);
}

#[tokio::test]
async fn delete_cancels_an_unfinished_job_for_good() {
    let sim = start_simulator(frozen_config()).await;
    let running = create_job(&sim, &create_body("to cancel", None, None)).await;
    let finished = create_job(&sim, &create_body("to keep", None, None)).await;
    let simulator = &sim;
    let delete = |id: String| async move {
        json_of(
            client()
                .delete(simulator.url(&format!("/async/chat/completions/{id}")))
                .bearer_auth(API_KEY)
                .send()
                .await
                .expect("delete"),
        )
        .await
    };
    let running_id = running["id"].as_str().expect("id").to_owned();
    let finished_id = finished["id"].as_str().expect("id").to_owned();

    let (status, cancelled) = delete(running_id.clone()).await;
    sim.advance_clock(FINISH);
    let (_, later) = get_job(&sim, &running_id).await;
    let (kept_status, kept) = delete(finished_id).await;
    let (unknown, _) = delete("no-such-job".to_owned()).await;

    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "FAILED");
    assert_eq!(
        cancelled["error_message"],
        perplexity_simulator::CANCELLED_MESSAGE
    );
    assert_eq!(later, cancelled);
    assert_eq!(kept_status, 200);
    assert_eq!(kept["status"], "COMPLETED");
    assert!(kept["response"].is_object());
    assert_eq!(unknown, 404);
    assert_eq!(sim.stats().requests.delete, 3);
}

#[tokio::test]
async fn a_429_fault_carries_retry_after_and_changes_nothing() {
    let sim = start_simulator(frozen_config()).await;
    let (armed, _) = control(
        &sim,
        "/_sim/http-faults",
        json!({ "endpoint": "create", "status": 429, "times": 2, "retry_after_secs": 7 }),
    )
    .await;
    let body = create_body("q", Some("01JOB-429"), None);
    let send = || {
        client()
            .post(sim.url("/async/chat/completions"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
    };

    let first = send().await.expect("create");
    let retry_after = first
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let (first_status, error) = json_of(first).await;
    let (second_status, _) = json_of(send().await.expect("create")).await;
    let (third_status, job) = json_of(send().await.expect("create")).await;

    assert_eq!(armed, 200);
    assert_eq!((first_status, second_status, third_status), (429, 429, 200));
    assert_eq!(retry_after.as_deref(), Some("7"));
    assert_eq!(error["error"]["code"], 429);
    assert_eq!(job["status"], "CREATED");
    let stats = sim.stats();
    assert_eq!(stats.jobs_created, 1);
    assert_eq!(stats.http_faults_served, 2);
    assert_eq!(stats.requests.create, 3);
}

#[tokio::test]
async fn an_any_fault_answers_gets_and_lists_with_5xx() {
    let sim = start_simulator(frozen_config()).await;
    let job = create_job(&sim, &create_body("q", None, None)).await;
    let id = job["id"].as_str().expect("id");
    control(
        &sim,
        "/_sim/http-faults",
        json!({ "endpoint": "any", "status": 503, "times": 2 }),
    )
    .await;

    let (get_status, _) = get_job(&sim, id).await;
    let list_status = client()
        .get(sim.url("/async/chat/completions"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("list")
        .status()
        .as_u16();
    let (after, _) = get_job(&sim, id).await;

    assert_eq!((get_status, list_status, after), (503, 503, 200));
    assert_eq!(
        control_get(&sim, "/_sim/http-faults").await["http_faults"],
        json!([])
    );
}

#[tokio::test]
async fn the_control_api_refuses_what_it_does_not_understand() {
    let sim = start_simulator(frozen_config()).await;
    let cases = [
        ("/_sim/rules", json!({ "webhok": "drop" })),
        ("/_sim/rules", json!({ "fail_message": "x" })),
        (
            "/_sim/http-faults",
            json!({ "endpoint": "create", "status": 200 }),
        ),
        (
            "/_sim/http-faults",
            json!({ "endpoint": "upload", "status": 500 }),
        ),
        ("/_sim/clock", json!({ "advance_secs": -5 })),
        ("/_sim/clock", json!({})),
    ];

    for (path, body) in cases {
        let (status, error) = control(&sim, path, body.clone()).await;

        assert_eq!(status, 400, "{path} {body} answered {error}");
        assert!(error["error"]["message"].is_string());
    }
    assert_eq!(control_get(&sim, "/_sim/clock").await["offset_secs"], 0);
    let unknown = client()
        .get(sim.url("/no/such/route"))
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn reset_forgets_jobs_rules_faults_and_the_clock() {
    let sim = start_simulator(frozen_config()).await;
    let job = create_job(&sim, &create_body("q", Some("01JOB-R"), None)).await;
    control(&sim, "/_sim/rules", json!({ "webhook": "drop" })).await;
    control(
        &sim,
        "/_sim/http-faults",
        json!({ "endpoint": "list", "status": 500 }),
    )
    .await;
    sim.advance_clock(DAY);

    let (status, _) = control(&sim, "/_sim/reset", json!({})).await;

    assert_eq!(status, 200);
    let stats = sim.stats();
    assert_eq!(stats.jobs_created, 0);
    assert_eq!(stats.requests.create, 0);
    let (gone, _) = get_job(&sim, job["id"].as_str().expect("id")).await;
    assert_eq!(gone, 404);
    assert_eq!(control_get(&sim, "/_sim/rules").await["rules"], json!([]));
    assert_eq!(
        control_get(&sim, "/_sim/http-faults").await["http_faults"],
        json!([])
    );
    assert_eq!(control_get(&sim, "/_sim/clock").await["offset_secs"], 0);
    let again = create_job(&sim, &create_body("q", Some("01JOB-R"), None)).await;
    assert_ne!(again["id"], job["id"]);
}
