use sea_orm::entity::prelude::*;

/// A deployment and its state machine. Every transition is a compare-and-set on `revision`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deployments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub app_id: Uuid,
    pub environment_id: Uuid,
    pub release_id: Uuid,
    /// The release serving before this deployment: the rollback target.
    pub previous_release_id: Option<Uuid>,
    pub strategy: String,
    pub state: String,
    pub phase: String,
    pub current_step: i32,
    /// JSON array of steps with their status and times.
    #[sea_orm(column_type = "Text")]
    pub steps: String,
    pub weight: i32,
    pub required_approvals: i32,
    pub created_by: String,
    pub created_by_email: String,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// When the engine must act next (end of a hold, driver timeout); null while waiting on people.
    pub next_action_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub failure_reason: String,
    /// DORA: when the failure was detected, and when service was restored.
    pub failure_detected_at: Option<DateTimeUtc>,
    pub restored_at: Option<DateTimeUtc>,
    /// For rollback deployments: the deployment rolled back.
    pub rollback_of: Option<Uuid>,
    /// What triggered a rollback: "manual" or a rule name.
    pub trigger: String,
    /// Driver bookkeeping (pending webhook status URL, attempts), JSON.
    #[sea_orm(column_type = "Text")]
    pub driver_state: String,
    pub revision: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
