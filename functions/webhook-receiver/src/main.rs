//! The `webhook-receiver` Lambda: the provider's signed deliveries, behind no authorizer (the
//! signature is the authentication).

use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    research_relay::telemetry::init();
    let app = research_relay::app::LiveApp::from_env().await?;
    let app = &app;

    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(webhook_receiver::handle(app, request).await)
    }))
    .await
}
