//! Forged and malformed deliveries: every one is refused with a 4xx, and none writes anything or
//! sends anything.

use research_relay::signature::{derive_job_secret, sign};

use crate::support::{
    HeldJob, completed, delivery, held_job, held_stack, item_count, mails, post_raw, raw_job,
    report_completion, signature, signature_with,
};

/// One forged delivery: where it goes, its bytes, its signature headers, and the answer due.
struct Forgery {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    expected: u16,
}

fn forgery(
    name: &'static str,
    path: &str,
    body: &[u8],
    signature: Option<&str>,
    expected: u16,
) -> Forgery {
    Forgery {
        name,
        method: reqwest::Method::POST,
        path: path.to_owned(),
        body: body.to_vec(),
        headers: signature
            .map(|value| ("x-perplexity-signature", value.as_bytes().to_vec()))
            .into_iter()
            .collect(),
        expected,
    }
}

fn hex_to_base64(hex_text: &str) -> String {
    use base64::Engine;
    let bytes = crate::support::hex_bytes(hex_text);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn forgeries(stack_key: &str, job: &HeldJob, other: &HeldJob) -> Vec<Forgery> {
    let id = job.id.as_str();
    let path = format!("/webhooks/perplexity/{id}");
    let body = completed(job);
    let good = signature_with(stack_key, id, &body);
    let sig = |body: &[u8]| signature_with(stack_key, id, body);
    let tampered = |from: &str, to: &str| {
        String::from_utf8(body.clone())
            .expect("UTF-8")
            .replacen(from, to, 1)
            .into_bytes()
    };
    let unknown_id = ulid::Ulid::new().to_string();
    let failed_body = delivery(&job.provider_id, "FAILED", None);
    let mut body_newline = body.clone();
    body_newline.push(b'\n');
    let upper = good.to_uppercase();
    let job_secret = derive_job_secret(stack_key, id);

    let mut cases = vec![
        forgery("missing header", &path, &body, None, 401),
        forgery("empty header", &path, &body, Some(""), 401),
        forgery(
            "well formed, another key",
            &path,
            &body,
            Some(&signature_with("not-our-key", id, &body)),
            401,
        ),
        forgery(
            "retired key never configured",
            &path,
            &body,
            Some(&signature_with("whsec_test_0001", id, &body)),
            401,
        ),
        forgery("cut to 63 digits", &path, &body, Some(&good[..63]), 401),
        forgery("cut to 32 digits", &path, &body, Some(&good[..32]), 401),
        forgery(
            "one digit too many",
            &path,
            &body,
            Some(&format!("{good}0")),
            401,
        ),
        forgery(
            "base64 of the digest",
            &path,
            &body,
            Some(&hex_to_base64(&good)),
            401,
        ),
        forgery(
            "prefixed base64",
            &path,
            &body,
            Some(&format!("sha256={}", hex_to_base64(&good))),
            401,
        ),
        forgery(
            "upper-case prefix",
            &path,
            &body,
            Some(&format!("SHA256={good}")),
            401,
        ),
        forgery(
            "mixed-case prefix",
            &path,
            &body,
            Some(&format!("Sha256={upper}")),
            401,
        ),
        forgery(
            "space after the prefix",
            &path,
            &body,
            Some(&format!("sha256= {good}")),
            401,
        ),
        forgery(
            "space inside the digits",
            &path,
            &body,
            Some(&format!("{} {}", &good[..32], &good[32..])),
            401,
        ),
        forgery(
            "colon-separated digits",
            &path,
            &body,
            Some(
                &good
                    .as_bytes()
                    .chunks(2)
                    .map(|pair| String::from_utf8_lossy(pair).into_owned())
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            401,
        ),
        forgery(
            "sha1 prefix",
            &path,
            &body,
            Some(&format!("sha1={good}")),
            401,
        ),
        forgery(
            "sha512 prefix",
            &path,
            &body,
            Some(&format!("sha512={good}")),
            401,
        ),
        forgery(
            "prefix twice",
            &path,
            &body,
            Some(&format!("sha256=sha256={good}")),
            401,
        ),
        forgery("prefix only", &path, &body, Some("sha256="), 401),
        forgery(
            "non-hex last digit",
            &path,
            &body,
            Some(&format!("{}g", &good[..63])),
            401,
        ),
        forgery("64 z", &path, &body, Some(&"z".repeat(64)), 401),
        forgery("64 zeros", &path, &body, Some(&"0".repeat(64)), 401),
        forgery(
            "40-digit SHA-1 length",
            &path,
            &body,
            Some(&good[..40]),
            401,
        ),
        forgery(
            "the job secret itself",
            &path,
            &body,
            Some(&job_secret),
            401,
        ),
        forgery(
            "keyed with the signing key, not the job secret",
            &path,
            &body,
            Some(&sign(stack_key, &body)),
            401,
        ),
        forgery(
            "signed over the base64 text of the body",
            &path,
            &body,
            Some(&sig(base64_text(&body).as_bytes())),
            401,
        ),
        forgery(
            "signed with a trailing newline, sent without",
            &path,
            &body,
            Some(&sig(&body_newline)),
            401,
        ),
        forgery(
            "sent with a trailing newline, signed without",
            &path,
            &body_newline,
            Some(&good),
            401,
        ),
        forgery(
            "status changed after signing",
            &path,
            &tampered("\"COMPLETED\"", "\"FAILED\""),
            Some(&good),
            401,
        ),
        forgery(
            "content changed after signing",
            &path,
            &tampered("Findings", "Fandings"),
            Some(&good),
            401,
        ),
        forgery(
            "job_id changed after signing",
            &path,
            &tampered(&job.provider_id, "prov_forged"),
            Some(&good),
            401,
        ),
        forgery("body emptied after signing", &path, b"", Some(&good), 401),
        forgery(
            "signed for another job id",
            &path,
            &body,
            Some(&signature_with(stack_key, &other.id, &body)),
            401,
        ),
        forgery(
            "another job's valid delivery sent to this job",
            &path,
            &completed(other),
            Some(&signature_with(stack_key, &other.id, &completed(other))),
            401,
        ),
        forgery(
            "this job's signature sent to another job",
            &format!("/webhooks/perplexity/{}", other.id),
            &body,
            Some(&good),
            401,
        ),
        forgery(
            "this job's signature sent to an unknown job",
            &format!("/webhooks/perplexity/{unknown_id}"),
            &body,
            Some(&good),
            401,
        ),
        forgery(
            "signature of a FAILED body on the COMPLETED body",
            &path,
            &body,
            Some(&sig(&failed_body)),
            401,
        ),
        Forgery {
            name: "non-ASCII bytes in the header",
            headers: vec![(
                "x-perplexity-signature",
                format!("{}é", &good[..62]).into_bytes(),
            )],
            ..forgery("", &path, &body, None, 401)
        },
        Forgery {
            name: "the header sent twice, the valid one first",
            headers: vec![
                ("x-perplexity-signature", good.as_bytes().to_vec()),
                ("x-perplexity-signature", "0".repeat(64).into_bytes()),
            ],
            ..forgery("", &path, &body, None, 401)
        },
        Forgery {
            name: "a misspelt header name",
            headers: vec![("x-perplexity-signatures", good.as_bytes().to_vec())],
            ..forgery("", &path, &body, None, 401)
        },
        Forgery {
            name: "another provider's header name",
            headers: vec![("x-signature", good.as_bytes().to_vec())],
            ..forgery("", &path, &body, None, 401)
        },
        forgery(
            "the signature in the query string",
            &format!("{path}?signature={good}"),
            &body,
            None,
            401,
        ),
        // Valid signatures over bodies that are not deliveries.
        forgery(
            "malformed JSON",
            &path,
            b"{\"job_id\":",
            Some(&sig(b"{\"job_id\":")),
            400,
        ),
        forgery("empty body", &path, b"", Some(&sig(b"")), 400),
        forgery("JSON null", &path, b"null", Some(&sig(b"null")), 400),
        forgery("a JSON array", &path, b"[]", Some(&sig(b"[]")), 400),
        forgery(
            "a JSON string",
            &path,
            b"\"COMPLETED\"",
            Some(&sig(b"\"COMPLETED\"")),
            400,
        ),
        forgery(
            "no job_id",
            &path,
            br#"{"status":"COMPLETED"}"#,
            Some(&sig(br#"{"status":"COMPLETED"}"#)),
            400,
        ),
        forgery(
            "empty job_id",
            &path,
            br#"{"job_id":"","status":"COMPLETED"}"#,
            Some(&sig(br#"{"job_id":"","status":"COMPLETED"}"#)),
            400,
        ),
        forgery(
            "numeric job_id",
            &path,
            br#"{"job_id":42,"status":"COMPLETED"}"#,
            Some(&sig(br#"{"job_id":42,"status":"COMPLETED"}"#)),
            400,
        ),
        forgery(
            "numeric status",
            &path,
            br#"{"job_id":"p","status":3}"#,
            Some(&sig(br#"{"job_id":"p","status":3}"#)),
            400,
        ),
        forgery(
            "not UTF-8",
            &path,
            &[0xff, 0xfe, 0x00, 0x7b],
            Some(&sig(&[0xff, 0xfe, 0x00, 0x7b])),
            400,
        ),
        forgery(
            "both id spellings",
            &path,
            br#"{"id":"a","job_id":"b","status":"COMPLETED"}"#,
            Some(&sig(br#"{"id":"a","job_id":"b","status":"COMPLETED"}"#)),
            400,
        ),
        // Valid signatures for jobs or provider jobs we do not have.
        {
            let wrong = delivery("prov_someone_else", "COMPLETED", Some(&report_completion()));
            forgery(
                "wrong provider job id",
                &path,
                &wrong,
                Some(&sig(&wrong)),
                409,
            )
        },
        {
            let wrong = delivery("prov_someone_else", "FAILED", None);
            forgery(
                "wrong provider job id, FAILED",
                &path,
                &wrong,
                Some(&sig(&wrong)),
                409,
            )
        },
        forgery(
            "unknown job id, valid signature",
            &format!("/webhooks/perplexity/{unknown_id}"),
            &body,
            Some(&signature_with(stack_key, &unknown_id, &body)),
            404,
        ),
        forgery(
            "path garbage, signed for it",
            "/webhooks/perplexity/not-a-job",
            &body,
            Some(&signature_with(stack_key, "not-a-job", &body)),
            404,
        ),
        forgery(
            "our id in lower case, signed for it",
            &format!("/webhooks/perplexity/{}", id.to_lowercase()),
            &body,
            Some(&signature_with(stack_key, &id.to_lowercase(), &body)),
            404,
        ),
        {
            let long = "A".repeat(1_000);
            forgery(
                "a thousand-character id, signed for it",
                &format!("/webhooks/perplexity/{long}"),
                &body,
                Some(&signature_with(stack_key, &long, &body)),
                404,
            )
        },
        forgery(
            "percent-encoded id",
            &format!("/webhooks/perplexity/{id}%20"),
            &body,
            Some(&good),
            401,
        ),
        forgery("no id", "/webhooks/perplexity/", &body, Some(&good), 404),
        forgery(
            "an extra path segment",
            &format!("{path}/extra"),
            &body,
            Some(&good),
            404,
        ),
        forgery(
            "a dot-dot segment (the client resolves it to /webhooks)",
            "/webhooks/perplexity/..",
            &body,
            Some(&good),
            404,
        ),
        Forgery {
            name: "GET with a valid signature",
            method: reqwest::Method::GET,
            ..forgery("", &path, &body, Some(&good), 405)
        },
        Forgery {
            name: "PUT with a valid signature",
            method: reqwest::Method::PUT,
            ..forgery("", &path, &body, Some(&good), 405)
        },
    ];
    cases.retain(|case| !case.name.is_empty());
    cases
}

fn base64_text(body: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_malformed_deliveries_are_refused_without_a_write_or_an_email() {
    let stack = held_stack().await;
    let job = held_job(&stack, "target", "Which deliveries are genuine?").await;
    let other = held_job(&stack, "bystander", "Another job, another secret").await;
    let key = stack.app().signing_keys.current.expose().to_owned();
    let cases = forgeries(&key, &job, &other);
    let job_before = raw_job(&stack, &job.id).await;
    let other_before = raw_job(&stack, &other.id).await;
    let items_before = item_count(&stack).await;

    let mut answers = Vec::new();
    for case in &cases {
        let mut request = stack
            .http
            .request(case.method.clone(), stack.url(&case.path))
            .header("content-type", "application/json")
            .body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(
                *name,
                reqwest::header::HeaderValue::from_bytes(value).expect("sendable"),
            );
        }
        let status = request.send().await.expect("front answers").status();
        answers.push((case.name, status.as_u16(), case.expected));
    }

    assert!(cases.len() >= 50, "{} cases", cases.len());
    let wrong: Vec<_> = answers
        .iter()
        .filter(|(_, status, expected)| status != expected)
        .collect();
    assert!(wrong.is_empty(), "(case, got, expected): {wrong:?}");
    assert_eq!(raw_job(&stack, &job.id).await, job_before);
    assert_eq!(raw_job(&stack, &other.id).await, other_before);
    assert_eq!(item_count(&stack).await, items_before);
    assert!(mails(&stack, &job.id).is_empty());
    assert!(mails(&stack, &other.id).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_genuine_delivery_after_the_forgeries_still_finishes_the_job() {
    let stack = held_stack().await;
    let job = held_job(&stack, "survivor", "Does a forgery block the real one?").await;
    let body = completed(&job);
    let forged = post_raw(
        &stack,
        &format!("/webhooks/perplexity/{}", job.id),
        body.clone(),
        &[("x-perplexity-signature", "0".repeat(64).as_bytes())],
    )
    .await;

    let genuine = post_raw(
        &stack,
        &format!("/webhooks/perplexity/{}", job.id),
        body.clone(),
        &[(
            "x-perplexity-signature",
            signature(&stack, &job.id, &body).as_bytes(),
        )],
    )
    .await;

    assert_eq!(forged.status, 401);
    assert_eq!(forged.body["code"], "signature_mismatch");
    assert_eq!(genuine.status, 200, "{}", genuine.body);
    assert_eq!(genuine.body["outcome"], "changed");
    assert_eq!(mails(&stack, &job.id).len(), 1);
}
