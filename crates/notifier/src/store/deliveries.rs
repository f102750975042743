use sea_orm::entity::prelude::*;

/// One message to one channel: an event, or a group of events collected during group_wait.
/// Its id is the `webhook-id` of every attempt, so receivers can drop duplicates.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: Uuid,
    pub rule_id: Option<Uuid>,
    pub group_key: String,
    /// See `service::status`.
    pub status: String,
    /// When the group is sent, or the next attempt is due.
    pub due_at: DateTimeUtc,
    pub attempts: i32,
    /// Attempts made before the last replay: the retry schedule restarts from there.
    pub retry_base: i32,
    pub created_at: DateTimeUtc,
    pub delivered_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub last_error: String,
    pub last_status_code: i32,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    /// The first (primary) event of the message.
    pub event_id: Uuid,
    pub event_type: String,
    pub subject: String,
    pub severity: String,
    pub app: String,
    pub environment: String,
    pub deployment_id: String,
    pub incident_id: String,
    pub escalation_id: String,
    pub escalation_level: i32,
    pub item_count: i32,
    /// Time of the first event, for end-to-end latency.
    pub first_event_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
