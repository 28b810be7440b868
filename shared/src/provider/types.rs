//! Wire types of the Perplexity async API, as lenient as the provider is inconsistent.
//!
//! Every field the product does not strictly need is optional, unknown fields are ignored, and
//! both spellings the provider has used are accepted (`CREATED`/`QUEUED`, `error_message` /
//! `failed_reason`), so a change on their side degrades a job instead of failing it.

use serde::{Deserialize, Serialize};

/// A job's status as the provider reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProviderStatus {
    /// Accepted and waiting for a worker (the spec says `CREATED`, older docs `QUEUED`).
    #[serde(alias = "QUEUED")]
    Created,
    /// A worker is searching and writing.
    InProgress,
    /// Finished; `response` should hold the result.
    Completed,
    /// Finished without a result; `error_message` says why.
    Failed,
    /// Anything else: logged and treated as not finished.
    #[default]
    #[serde(other)]
    Unknown,
}

impl ProviderStatus {
    /// Whether the provider will not change this job any more.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// The job object returned by create and get, and (in part) posted to the webhook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderJob {
    /// The provider's id for the job (`job_id` in webhook deliveries).
    #[serde(alias = "job_id")]
    pub id: String,
    /// The model that ran the job.
    #[serde(default)]
    pub model: Option<String>,
    /// Current status.
    #[serde(default = "unknown_status")]
    pub status: ProviderStatus,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub completed_at: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub failed_at: Option<i64>,
    /// Why the job failed.
    #[serde(default, alias = "failed_reason")]
    pub error_message: Option<String>,
    /// The finished result, kept as raw JSON so nothing the provider sent is lost when stored.
    #[serde(default)]
    pub response: Option<serde_json::Value>,
}

fn unknown_status() -> ProviderStatus {
    ProviderStatus::Unknown
}

/// The chat completion inside a finished job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// The completion id.
    #[serde(default)]
    pub id: Option<String>,
    /// The model that produced the answer.
    #[serde(default)]
    pub model: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: Option<i64>,
    /// Token counts and cost.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Source URLs, numbered from 1 by the `[n]` markers.
    #[serde(default)]
    pub citations: Option<Vec<String>>,
    /// Richer sources with titles; preferred over `citations` when present.
    #[serde(default)]
    pub search_results: Option<Vec<SearchResult>>,
    /// The answers; the first one is the report.
    #[serde(default)]
    pub choices: Vec<Choice>,
}

impl CompletionResponse {
    /// The report text of the first choice, if any.
    pub fn content(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|choice| choice.message.as_ref())
            .and_then(|message| message.content.as_deref())
    }
}

/// One answer of a completion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Choice {
    /// The full message.
    #[serde(default)]
    pub message: Option<Message>,
    /// Why generation stopped (`stop`, `length`).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A chat message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Message {
    /// `assistant` for answers.
    #[serde(default)]
    pub role: Option<String>,
    /// The text; for deep research a think block, then Markdown.
    #[serde(default)]
    pub content: Option<String>,
}

/// One search result the answer drew on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SearchResult {
    /// The page title.
    #[serde(default)]
    pub title: Option<String>,
    /// The page address.
    #[serde(default)]
    pub url: String,
    /// Publication date, when known.
    #[serde(default)]
    pub date: Option<String>,
}

/// Token counts and, on newer responses, the cost in USD.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// All tokens.
    #[serde(default)]
    pub total_tokens: Option<u64>,
    /// Reasoning tokens (deep research).
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
    /// Searches run.
    #[serde(default)]
    pub num_search_queries: Option<u64>,
    /// Cost breakdown.
    #[serde(default)]
    pub cost: Option<Cost>,
}

/// Cost of a request in USD.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cost {
    /// The total the provider charged.
    #[serde(default)]
    pub total_cost: Option<f64>,
}
