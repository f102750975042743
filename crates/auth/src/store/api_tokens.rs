use sea_orm::entity::prelude::*;

/// CI API tokens, stored as SHA-256 digests; the secret is shown once at creation.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    /// First characters of the secret, to recognise it.
    pub prefix: String,
    #[sea_orm(unique)]
    pub token_hash: String,
    /// Comma-separated role names.
    pub roles: String,
    pub owner_id: Uuid,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
