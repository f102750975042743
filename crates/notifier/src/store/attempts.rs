use sea_orm::entity::prelude::*;

/// The delivery log: one row per attempt, written when the attempt starts and completed when
/// the receiver answers.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "delivery_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub channel_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTimeUtc,
    pub latency_ms: i64,
    pub status_code: i32,
    /// sending, success, failure, rate_limited, gone, refused, abandoned.
    pub outcome: String,
    #[sea_orm(column_type = "Text")]
    pub error: String,
    #[sea_orm(column_type = "Text")]
    pub response_excerpt: String,
    pub replica: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
