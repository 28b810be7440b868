//! Domain logic of research-relay, shared by the three Lambdas and the local stack.
//!
//! The Lambdas in `functions/` are thin: they read [`config::Config`], build an [`app::App`] and
//! hand events to handlers. Everything with a rule in it lives here as plain types and functions
//! that tests call directly: the job state machine ([`job`]), webhook signatures ([`signature`]),
//! the DynamoDB store ([`store`]), the SES mailer ([`mailer`]), the provider seam ([`provider`]),
//! report rendering ([`report`], [`email`]) and the path that finishes a job whichever way its
//! result arrives ([`finish`]).

pub mod app;
pub mod clock;
pub mod config;
pub mod email;
pub mod finish;
pub mod http;
pub mod job;
pub mod mailer;
pub mod metrics;
pub mod provider;
pub mod report;
pub mod request;
pub mod secrets;
pub mod signature;
pub mod store;
pub mod submission;
pub mod telemetry;
pub mod view;
