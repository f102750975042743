use sea_orm::entity::prelude::*;

/// An event routed to a channel: queued into a delivery, or kept out of one (suppressed by a
/// later event, or a duplicate within the rule's repeat interval).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_items")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub delivery_id: Option<Uuid>,
    pub channel_id: Uuid,
    pub rule_id: Option<Uuid>,
    pub event_id: Uuid,
    pub event_type: String,
    pub subject: String,
    pub severity: String,
    pub app: String,
    pub environment: String,
    pub deployment_id: String,
    pub incident_id: String,
    pub dedup_key: String,
    /// queued, suppressed or duplicate.
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    /// The event as CloudEvents JSON.
    #[sea_orm(column_type = "Text")]
    pub event: String,
    pub event_time: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
