use sea_orm::entity::prelude::*;

/// One incident escalated under one policy. `levels` is the policy's levels as they were when
/// the escalation started; `steps` the levels fired so far (JSON).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "escalations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub policy_id: Uuid,
    pub policy_name: String,
    pub incident_id: String,
    pub deployment_id: String,
    pub app: String,
    pub environment: String,
    pub severity: String,
    #[sea_orm(column_type = "Text")]
    pub summary: String,
    /// active, acknowledged, resolved, exhausted.
    pub status: String,
    pub levels_fired: i32,
    #[sea_orm(column_type = "Text")]
    pub levels: String,
    pub next_level_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub acknowledged_at: Option<DateTimeUtc>,
    pub acknowledged_by: String,
    pub resolved_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub steps: String,
    /// The incident event that started it.
    #[sea_orm(column_type = "Text")]
    pub event: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
