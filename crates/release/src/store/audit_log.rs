use sea_orm::entity::prelude::*;

/// The hash-chained audit log: each row's hash covers its content and the previous row's hash,
/// and sequence numbers have no gaps, so an edited or deleted row breaks the chain.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub id: Uuid,
    pub at: DateTimeUtc,
    pub actor_subject: String,
    pub actor_email: String,
    pub actor_kind: String,
    pub request_id: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    #[sea_orm(column_type = "Text")]
    pub before_json: String,
    #[sea_orm(column_type = "Text")]
    pub after_json: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
