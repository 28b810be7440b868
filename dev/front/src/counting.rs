//! Counts what the product asks of DynamoDB, so tests and benchmarks can hold it to a request
//! budget (requests per job, items a reconciler run reads) without timing anything.
//!
//! [`DynamoCounter`] is an SDK interceptor: registered on the DynamoDB client the product uses
//! (see `StackOptions::dynamodb_interceptors`), it sees every HTTP attempt, retries included,
//! which is what DynamoDB bills. Requests are named by their `X-Amz-Target` operation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{
    ConfigBag, Intercept, IntoShared, RuntimeComponents, SharedInterceptor,
};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;

/// DynamoDB requests seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamoCounts {
    /// Requests per operation (`UpdateItem`, `Query`, ...), attempts and retries included.
    pub requests: BTreeMap<String, u64>,
    /// Items returned by `Query` and `Scan` answers.
    pub items_read: u64,
}

impl DynamoCounts {
    /// Every request, whatever its operation.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Requests of one operation.
    pub fn of(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &DynamoCounts) -> DynamoCounts {
        let requests = self
            .requests
            .iter()
            .map(|(operation, count)| {
                (
                    operation.clone(),
                    count.saturating_sub(earlier.of(operation)),
                )
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        DynamoCounts {
            requests,
            items_read: self.items_read.saturating_sub(earlier.items_read),
        }
    }
}

/// An interceptor that counts DynamoDB requests and the items queries return; clones share the
/// counts.
#[derive(Debug, Clone, Default)]
pub struct DynamoCounter {
    counts: Arc<Mutex<DynamoCounts>>,
}

impl DynamoCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counts so far.
    pub fn snapshot(&self) -> DynamoCounts {
        self.lock().clone()
    }

    /// The counter as an interceptor to register on a DynamoDB client.
    pub fn interceptor(&self) -> SharedInterceptor {
        self.clone().into_shared()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DynamoCounts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Intercept for DynamoCounter {
    fn name(&self) -> &'static str {
        "DynamoCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("Unknown")
            .to_owned();
        *self.lock().requests.entry(operation).or_default() += 1;
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        let items = output
            .downcast_ref::<QueryOutput>()
            .map(|query| query.count())
            .or_else(|| output.downcast_ref::<ScanOutput>().map(|scan| scan.count()))
            .unwrap_or(0);
        self.lock().items_read += u64::try_from(items).unwrap_or(0);
        Ok(())
    }
}
