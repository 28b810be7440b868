//! The table as the local stack creates it.
//!
//! `template.yaml` declares the same table for AWS; a test reads the template and compares key
//! schema, attribute types, indexes, projections and the TTL attribute with these constants, so
//! the two cannot drift apart.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use research_relay::store::{DUE_INDEX, OWNER_INDEX, OWNER_INDEX_PROJECTION};

/// The TTL attribute.
pub const TTL_ATTRIBUTE: &str = "ttl";

/// Attribute definitions: (name, type).
pub const ATTRIBUTES: [(&str, &str); 5] = [
    ("pk", "S"),
    ("due_shard", "S"),
    ("due_at", "N"),
    ("owner", "S"),
    ("id", "S"),
];

/// Indexes: (name, hash key, range key, projection type, included attributes).
pub fn indexes() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
)> {
    vec![
        (DUE_INDEX, "due_shard", "due_at", "KEYS_ONLY", Vec::new()),
        (
            OWNER_INDEX,
            "owner",
            "id",
            "INCLUDE",
            OWNER_INDEX_PROJECTION.to_vec(),
        ),
    ]
}

/// Creates the table (if absent) and turns TTL on.
pub async fn ensure_table(client: &Client, table: &str) -> Result<(), String> {
    let exists = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_ok();
    if exists {
        return Ok(());
    }

    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?);
    for (name, kind) in ATTRIBUTES {
        let kind = if kind == "N" {
            ScalarAttributeType::N
        } else {
            ScalarAttributeType::S
        };
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
                .map_err(|error| error.to_string())?,
        );
    }
    for (name, hash, range, projection, included) in indexes() {
        let mut projection_builder =
            Projection::builder().projection_type(ProjectionType::from(projection));
        for attribute in included {
            projection_builder = projection_builder.non_key_attributes(attribute);
        }
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(projection_builder.build())
                .build()
                .map_err(|error| error.to_string())?,
        );
    }
    request
        .send()
        .await
        .map_err(|error| aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string())?;

    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(|error| error.to_string())?,
        )
        .send()
        .await
        .map_err(|error| aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string())?;
    Ok(())
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, String> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|error| error.to_string())
}
