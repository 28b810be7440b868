//! The research provider seam.
//!
//! Everything the product needs from a deep-research provider fits in four calls: submit a job,
//! look at a job, cancel a job, and (for webhooks) the shape of a finished result. The Perplexity
//! async API is the first implementation; a second provider (for example Perplexity's Agent API)
//! joins by implementing [`ResearchProvider`] and mapping its own objects onto [`ProviderJob`].

pub mod perplexity;
pub mod types;

use std::time::Duration;

pub use types::{CompletionResponse, Cost, ProviderJob, ProviderStatus, SearchResult, Usage};

/// What the provider needs to start one job.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// The provider request body (`model`, `messages`, filters), already validated by us.
    pub request: serde_json::Value,
    /// Our job id: the provider deduplicates on it, so a retried submit never starts a second paid
    /// job.
    pub idempotency_key: String,
    /// Where the provider posts the finished job.
    pub webhook_url: String,
    /// The per-job secret the provider signs its webhook with.
    pub webhook_secret: String,
}

/// Why a provider call did not give an answer we can use.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider asked us to slow down; try again after the given time.
    #[error("provider rate limit; retry after {retry_after:?}")]
    RateLimited {
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A fault that a later retry may not see: 5xx, timeout, connection refused.
    #[error("provider unavailable: {0}")]
    Transient(String),
    /// The provider refused the request itself; retrying the same request cannot succeed.
    #[error("provider refused the request ({status}): {message}")]
    Rejected {
        /// The HTTP status the provider answered with.
        status: u16,
        /// The provider's own explanation, safe to show the job's owner.
        message: String,
    },
    /// The provider no longer knows the job (never existed, or past its retention).
    #[error("provider has no such job")]
    NotFound,
    /// The provider answered 2xx with a body we could not understand.
    #[error("provider answer not understood: {0}")]
    Malformed(String),
}

impl ProviderError {
    /// Whether a later attempt may succeed without changing the request.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient(_))
    }
}

/// A deep-research provider as the product sees it.
pub trait ResearchProvider: Send + Sync {
    /// Starts a job, or returns the job already started under the same idempotency key.
    fn submit(
        &self,
        submit: &SubmitRequest,
    ) -> impl Future<Output = Result<ProviderJob, ProviderError>> + Send;

    /// Reads a job's current state, including the result once it is finished.
    fn get(
        &self,
        provider_id: &str,
    ) -> impl Future<Output = Result<ProviderJob, ProviderError>> + Send;

    /// Cancels a job that has not finished. Cancelling a job the provider no longer knows is a
    /// success: the caller only wants it not to run.
    fn cancel(&self, provider_id: &str) -> impl Future<Output = Result<(), ProviderError>> + Send;
}
