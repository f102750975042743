use sea_orm::entity::prelude::*;

/// Notification channels (webhook, Slack, e-mail, PagerDuty). Secrets live encrypted in
/// `secrets` (see `domain::crypto`); `config` holds the settings that are not secret.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "channels")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub created_at: DateTimeUtc,
    /// JSON object of non-secret settings.
    #[sea_orm(column_type = "Text")]
    pub config: String,
    /// Sealed JSON object of secrets (`v1.<key id>.<nonce>.<ciphertext>`), empty when none.
    #[sea_orm(column_type = "Text")]
    pub secrets: String,
    /// Id of the key `secrets` is sealed with.
    pub secret_kid: String,
    /// JSON object of template overrides.
    #[sea_orm(column_type = "Text")]
    pub templates: String,
    pub rate_limit_per_minute: i32,
    #[sea_orm(column_type = "Text")]
    pub disabled_reason: String,
    /// The receiver asked (429 + Retry-After) not to be called before this.
    pub throttled_until: Option<DateTimeUtc>,
    pub updated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
