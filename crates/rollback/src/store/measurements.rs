use sea_orm::entity::prelude::*;

/// A decision record: one evaluation of one rule.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "measurements")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub analysis_id: Uuid,
    pub rule: String,
    pub metric: String,
    #[sea_orm(column_type = "Text")]
    pub query: String,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub compared: Option<f64>,
    pub operator: String,
    pub threshold: f64,
    pub samples: i64,
    pub weight: i32,
    pub verdict: String,
    pub action: String,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
