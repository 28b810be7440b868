//! The `reconciler` Lambda: invoked on a schedule to finish what webhooks missed.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    research_relay::telemetry::init();
    let app = research_relay::app::LiveApp::from_env().await?;
    let app = &app;

    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| async move {
            reconciler::handle(app, event).await
        },
    ))
    .await
}
