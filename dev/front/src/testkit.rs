//! A whole local stack inside one test process: a fresh table, secret and sender in the shared
//! emulator, an in-process simulator, and a front on a free port. Tests use it to drive the
//! product only through its public surfaces (HTTP, webhooks, the schedule) and to read what the
//! emulator holds.
//!
//! The emulator itself (moto) is started once per `make test` and named by
//! `RESEARCH_RELAY_TEST_MOTO`; every stack gets its own table and secret, so tests run in
//! parallel and beside `make dev`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::Credentials;
use perplexity_simulator::{RunningSimulator, SimulatorConfig};
use research_relay::app::App;
use research_relay::clock::Clock;
use research_relay::config::Config;
use research_relay::mailer::{Mailer, SesMailer};
use research_relay::provider::perplexity::PerplexityClient;
use serde_json::Value;

use crate::mailbox::{self, ReceivedMail};
use crate::{Front, RunningFront, jwt, stack};

/// The variable naming the emulator the tests use.
pub const MOTO_VARIABLE: &str = "RESEARCH_RELAY_TEST_MOTO";

/// The sender every test stack verifies.
pub const MAIL_FROM: &str = "Research Relay <reports@research-relay.example>";

/// The token key of test fronts.
pub const JWT_KEY: &[u8] = b"test-jwt-key";

/// The emulator's URL, or a panic that says how to start it.
pub fn moto_url() -> String {
    std::env::var(MOTO_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{MOTO_VARIABLE} is not set: run the tests with `make test`, which starts the emulator"
        )
    })
}

/// SDK configuration pointed at the emulator with dummy credentials.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "testkit"))
        .load()
        .await
}

/// How to build a stack; every field has a sensible test default.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Extra or overriding configuration variables.
    pub env: HashMap<String, String>,
    /// Simulator timings and retries.
    pub simulator: SimulatorConfig,
    /// Run the reconciler on this period, as the schedule would.
    pub schedule_every: Option<Duration>,
    /// Signing keys in the secret, current first.
    pub signing_keys: Vec<String>,
    /// Interceptors on the product's DynamoDB client, e.g. a
    /// [`crate::counting::DynamoCounter`] that holds the product to a request budget.
    pub dynamodb_interceptors: Vec<aws_sdk_dynamodb::config::SharedInterceptor>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            env: HashMap::new(),
            simulator: SimulatorConfig {
                start_after: Duration::from_millis(50),
                complete_after: Duration::from_millis(300),
                webhook_retry_base: Duration::from_millis(100),
                webhook_retry_max: Duration::from_secs(1),
                ..SimulatorConfig::default()
            },
            schedule_every: None,
            signing_keys: vec!["test-signing-key-current".into()],
            dynamodb_interceptors: Vec::new(),
        }
    }
}

/// A running stack.
pub struct TestStack<M: Mailer + 'static = SesMailer> {
    /// The handlers' context (the same one the front serves).
    pub front_state: Arc<Front<PerplexityClient, M>>,
    /// The front.
    pub front: RunningFront,
    /// The simulator.
    pub simulator: RunningSimulator,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// The emulator's URL.
    pub moto: String,
}

impl TestStack<SesMailer> {
    /// A stack with default options.
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// A stack with the given options and the real SES mailer.
    pub async fn start_with(options: StackOptions) -> Self {
        Self::start_with_mailer(options, SesMailer::new).await
    }
}

impl<M: Mailer + 'static> TestStack<M> {
    /// A stack whose mailer wraps the real SES mailer (to inject faults SES cannot be asked for).
    pub async fn start_with_mailer(
        options: StackOptions,
        wrap: impl FnOnce(aws_sdk_sesv2::Client) -> M,
    ) -> Self {
        let sdk = sdk_config().await;
        let simulator_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the simulator");
        let simulator = perplexity_simulator::start(simulator_listener, options.simulator.clone())
            .await
            .expect("simulator starts");
        let front_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the front");
        let front_url = format!(
            "http://{}",
            front_listener.local_addr().expect("bound address")
        );

        let unique = ulid::Ulid::new().to_string().to_lowercase();
        let mut env: HashMap<String, String> = [
            ("TABLE_NAME", format!("rr-test-{unique}")),
            ("SECRET_ID", format!("rr-test/{unique}")),
            ("PUBLIC_BASE_URL", front_url.clone()),
            ("PERPLEXITY_BASE_URL", simulator.base_url.clone()),
            ("MAIL_FROM", MAIL_FROM.to_owned()),
            (
                "ALLOWED_MODELS",
                "sonar-deep-research,sonar-reasoning-pro,sonar-pro,sonar".to_owned(),
            ),
            ("POLL_SCHEDULE_SECS", "1,2,5".to_owned()),
            ("SUBMIT_RATE_PER_MINUTE", "6000".to_owned()),
            ("RECONCILE_DEADLINE_MARGIN_MS", "500".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        env.extend(options.env.clone());
        let config = Config::from_map(&env).expect("test configuration is valid");

        let keys: Vec<&str> = options.signing_keys.iter().map(String::as_str).collect();
        let secret = stack::secret_document(stack::LOCAL_PROVIDER_KEY, &keys);
        stack::prepare(&sdk, &config, &secret)
            .await
            .expect("emulator prepared");
        let app = research_relay::app::LiveApp::from_sdk_config(config, &sdk, Clock::system())
            .await
            .expect("app builds");
        let mut app: App<PerplexityClient, M> =
            app.with_mailer(wrap(aws_sdk_sesv2::Client::new(&sdk)));
        if !options.dynamodb_interceptors.is_empty() {
            let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk);
            for interceptor in &options.dynamodb_interceptors {
                dynamodb.push_interceptor(interceptor.clone());
            }
            let client = aws_sdk_dynamodb::Client::from_conf(dynamodb.build());
            app.store = app.store.clone().with_client(client);
        }

        let front_state = Arc::new(Front {
            app,
            jwt_key: JWT_KEY.to_vec(),
        });
        let front = crate::start(front_listener, front_state.clone(), options.schedule_every)
            .await
            .expect("front starts");
        Self {
            front_state,
            front,
            simulator,
            http: reqwest::Client::new(),
            moto: moto_url(),
        }
    }

    /// The handlers' context.
    pub fn app(&self) -> &App<PerplexityClient, M> {
        &self.front_state.app
    }

    /// A bearer token for `sub` with `email`.
    pub fn token(&self, sub: &str, email: &str) -> String {
        jwt::issue(JWT_KEY, sub, email, self.app().clock.now_secs(), 3600)
    }

    /// A URL on the front.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.front.base_url)
    }

    /// `POST /jobs` with a JSON body; answers (status, headers, body).
    pub async fn submit(&self, token: &str, body: &str, idempotency_key: Option<&str>) -> Answer {
        let mut request = self
            .http
            .post(self.url("/jobs"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        Answer::read(request.send().await.expect("front answers")).await
    }

    /// A request with a token to any front path.
    pub async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::read(request.send().await.expect("front answers")).await
    }

    /// `GET /jobs/{id}`.
    pub async fn job(&self, token: &str, id: &str) -> Answer {
        self.call(reqwest::Method::GET, &format!("/jobs/{id}"), Some(token))
            .await
    }

    /// Polls `GET /jobs/{id}` until `done` holds or `limit` passes; panics with the last view.
    pub async fn wait_for(
        &self,
        token: &str,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let answer = self.job(token, id).await;
            if done(&answer.body) {
                return answer.body;
            }
            assert!(
                started.elapsed() < limit,
                "job {id} did not reach the expected state in {limit:?}: {}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the reconciler once, as the schedule would.
    pub async fn reconcile(&self) -> reconciler::RunSummary {
        crate::invoke_reconciler(self.app(), Duration::from_secs(60)).await
    }

    /// The messages SES received for a job.
    pub async fn mails_for(&self, job_id: &str) -> Vec<ReceivedMail> {
        mailbox::received_for_job(&self.http, &self.moto, job_id)
            .await
            .expect("the emulator lists its messages")
    }

    /// The job's provider-side record in the simulator (found by our id, its idempotency key).
    pub fn simulator_job(&self, job_id: &str) -> Option<perplexity_simulator::SimJob> {
        self.simulator.jobs(Some(job_id)).into_iter().next()
    }

    /// Stops the front; the simulator stops when the stack is dropped.
    pub fn stop(self) {
        self.front.stop();
    }
}

/// A front answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Answer {
    /// Reads a whole answer.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = headers_of(&response);
        let bytes = response.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
        }
    }
}

/// An answer's headers by lower-case name; repeated headers keep the last value.
pub fn headers_of(response: &reqwest::Response) -> HashMap<String, String> {
    response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Whether a job view is finished and its e-mail settled.
pub fn finished_and_mailed(view: &Value) -> bool {
    matches!(
        view["status"].as_str(),
        Some("COMPLETED" | "FAILED" | "EXPIRED")
    ) && matches!(view["email"]["state"].as_str(), Some("SENT" | "REJECTED"))
}
