//! Thin tonic layer of the notifier service: authentication, roles, conversions. Reads need an
//! authenticated caller; writes the admin role; acknowledging an escalation an incident
//! commander, a release manager or an admin; the acknowledge link's token is its own credential.

use std::{collections::BTreeMap, sync::Arc};

use rp_identity::{Authenticator, Role};
use rp_proto::notifier::v1::{self as pb, notifier_service_server::NotifierService};
use rp_runtime::ServiceError;
use tonic::{Request, Response, Status};

use crate::{
    domain::escalation::Level,
    service::{ChannelChange, DeliveryFilter, NewChannel, NotifierCore, PolicyInput, RuleInput},
    store::{attempts, channels, escalation_policies, escalations, list, routing_rules},
};

pub struct NotifierGrpc {
    pub(crate) core: Arc<NotifierCore>,
    pub(crate) authn: Authenticator,
}

const WRITERS: &[Role] = &[Role::Admin];
const RESPONDERS: &[Role] = &[Role::IncidentCommander, Role::ReleaseManager, Role::Admin];

fn ts(at: chrono::DateTime<chrono::Utc>) -> Option<rp_proto::Timestamp> {
    Some(rp_proto::timestamp(at))
}

fn id(field: &str, raw: &str) -> Result<uuid::Uuid, Status> {
    uuid::Uuid::parse_str(raw.trim())
        .map_err(|_| ServiceError::Invalid(format!("{field} {raw:?} is not a valid id")).into())
}

impl NotifierGrpc {
    fn channel_to_pb(&self, channel: &channels::Model) -> pb::Channel {
        let (secrets_set, active_signing_secrets) = self.core.channel_secret_names(channel);
        let templates: BTreeMap<String, String> =
            serde_json::from_str(&channel.templates).unwrap_or_default();
        pb::Channel {
            id: channel.id.to_string(),
            name: channel.name.clone(),
            kind: channel.kind.clone(),
            enabled: channel.enabled,
            created_at: ts(channel.created_at),
            config_json: channel.config.clone(),
            secrets_set,
            templates: templates.into_iter().collect(),
            rate_limit_per_minute: channel.rate_limit_per_minute,
            disabled_reason: channel.disabled_reason.clone(),
            updated_at: channel.updated_at.and_then(ts),
            active_signing_secrets,
        }
    }
}

fn rule_to_pb(rule: &routing_rules::Model) -> pb::RoutingRule {
    pb::RoutingRule {
        id: rule.id.to_string(),
        name: rule.name.clone(),
        position: rule.position,
        enabled: rule.enabled,
        event_types: list(&rule.event_types),
        severities: list(&rule.severities),
        apps: list(&rule.apps),
        environments: list(&rule.environments),
        channel_ids: list(&rule.channel_ids),
        channel_kinds: list(&rule.channel_kinds),
        group_wait_ms: rule.group_wait_ms,
        repeat_interval_ms: rule.repeat_interval_ms,
        group_by: list(&rule.group_by),
        stop: rule.stop,
        created_at: ts(rule.created_at),
        updated_at: ts(rule.updated_at),
    }
}

fn rule_input(input: pb::RoutingRuleInput) -> RuleInput {
    RuleInput {
        name: input.name,
        position: input.position,
        disabled: input.disabled,
        event_types: input.event_types,
        severities: input.severities,
        apps: input.apps,
        environments: input.environments,
        channel_ids: input.channel_ids,
        channel_kinds: input.channel_kinds,
        group_wait_ms: input.group_wait_ms,
        repeat_interval_ms: input.repeat_interval_ms,
        group_by: input.group_by,
        stop: input.stop,
    }
}

fn attempt_to_pb(attempt: &attempts::Model) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        id: attempt.id.to_string(),
        delivery_id: attempt.delivery_id.to_string(),
        attempt: attempt.attempt,
        started_at: ts(attempt.started_at),
        latency_ms: attempt.latency_ms,
        status_code: attempt.status_code,
        outcome: attempt.outcome.clone(),
        error: attempt.error.clone(),
        response_excerpt: attempt.response_excerpt.clone(),
        replica: attempt.replica.clone(),
    }
}

fn delivery_to_pb(view: &crate::service::queries_view::DeliveryView) -> pb::Delivery {
    let row = &view.row;
    pb::Delivery {
        id: row.id.to_string(),
        channel_id: row.channel_id.to_string(),
        channel_name: view.channel_name.clone(),
        channel_kind: view.channel_kind.clone(),
        status: row.status.clone(),
        group_key: row.group_key.clone(),
        event_ids: view.event_ids.clone(),
        event_type: row.event_type.clone(),
        subject: row.subject.clone(),
        severity: row.severity.clone(),
        incident_id: row.incident_id.clone(),
        attempts: row.attempts,
        created_at: ts(row.created_at),
        due_at: ts(row.due_at),
        delivered_at: row.delivered_at.and_then(ts),
        last_error: row.last_error.clone(),
        last_status_code: row.last_status_code,
        attempt_log: view.attempts.iter().map(attempt_to_pb).collect(),
        event_types: view.event_types.clone(),
        escalation_id: row.escalation_id.clone(),
        suppressed_events: view.suppressed_events,
        app: row.app.clone(),
        environment: row.environment.clone(),
    }
}

fn policy_to_pb(policy: &escalation_policies::Model) -> pb::EscalationPolicy {
    let levels: Vec<Level> = serde_json::from_str(&policy.levels).unwrap_or_default();
    pb::EscalationPolicy {
        id: policy.id.to_string(),
        name: policy.name.clone(),
        enabled: policy.enabled,
        severities: list(&policy.severities),
        apps: list(&policy.apps),
        environments: list(&policy.environments),
        levels: levels.into_iter().map(level_to_pb).collect(),
        created_at: ts(policy.created_at),
        updated_at: ts(policy.updated_at),
    }
}

fn level_to_pb(level: Level) -> pb::EscalationLevel {
    pb::EscalationLevel {
        name: level.name,
        delay_ms: level.delay_ms,
        channel_ids: level.channel_ids,
        channel_kinds: level.channel_kinds,
    }
}

fn policy_input(input: pb::EscalationPolicyInput) -> PolicyInput {
    PolicyInput {
        name: input.name,
        disabled: input.disabled,
        severities: input.severities,
        apps: input.apps,
        environments: input.environments,
        levels: input
            .levels
            .into_iter()
            .map(|l| Level {
                name: l.name,
                delay_ms: l.delay_ms,
                channel_ids: l.channel_ids,
                channel_kinds: l.channel_kinds,
            })
            .collect(),
    }
}

fn escalation_to_pb(row: &escalations::Model) -> pb::Escalation {
    let levels: Vec<Level> = serde_json::from_str(&row.levels).unwrap_or_default();
    let steps: Vec<crate::service::EscalationStep> = serde_json::from_str(&row.steps).unwrap_or_default();
    pb::Escalation {
        id: row.id.to_string(),
        policy_id: row.policy_id.to_string(),
        policy_name: row.policy_name.clone(),
        incident_id: row.incident_id.clone(),
        app: row.app.clone(),
        environment: row.environment.clone(),
        severity: row.severity.clone(),
        summary: row.summary.clone(),
        status: row.status.clone(),
        levels_fired: row.levels_fired,
        levels: levels.len() as i32,
        next_level_at: row.next_level_at.and_then(ts),
        created_at: ts(row.created_at),
        acknowledged_at: row.acknowledged_at.and_then(ts),
        acknowledged_by: row.acknowledged_by.clone(),
        resolved_at: row.resolved_at.and_then(ts),
        steps: steps
            .into_iter()
            .map(|s| pb::EscalationStep {
                level: s.level,
                name: s.name,
                fired_at: ts(s.fired_at),
                delivery_ids: s.delivery_ids,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl NotifierService for NotifierGrpc {
    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let rows = self.core.list_channels().await?;
        Ok(Response::new(pb::ListChannelsResponse {
            channels: rows.iter().map(|c| self.channel_to_pb(c)).collect(),
        }))
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let channel = self.core.get_channel(id("id", &request.into_inner().id)?).await?;
        Ok(Response::new(self.channel_to_pb(&channel)))
    }

    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::ChannelWithSecret>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let input = request.into_inner();
        let (channel, generated) = self
            .core
            .create_channel(NewChannel {
                name: input.name,
                kind: input.kind,
                config_json: input.config_json,
                secrets: input.secrets.into_iter().collect(),
                templates: input.templates.into_iter().collect(),
                rate_limit_per_minute: input.rate_limit_per_minute,
                disabled: input.disabled,
            })
            .await?;
        Ok(Response::new(pb::ChannelWithSecret {
            channel: Some(self.channel_to_pb(&channel)),
            signing_secret: generated.unwrap_or_default(),
        }))
    }

    async fn update_channel(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let input = request.into_inner();
        let channel = self
            .core
            .update_channel(
                id("id", &input.id)?,
                ChannelChange {
                    name: input.name,
                    config_json: input.config_json,
                    secrets: input.secrets.into_iter().collect(),
                    templates: input.templates.into_iter().collect(),
                    replace_templates: input.replace_templates,
                    rate_limit_per_minute: input.rate_limit_per_minute,
                    enabled: input.enabled,
                },
            )
            .await?;
        Ok(Response::new(self.channel_to_pb(&channel)))
    }

    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Result<Response<pb::DeleteChannelResponse>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        self.core.delete_channel(id("id", &request.into_inner().id)?).await?;
        Ok(Response::new(pb::DeleteChannelResponse {}))
    }

    async fn rotate_channel_secret(
        &self,
        request: Request<pb::RotateChannelSecretRequest>,
    ) -> Result<Response<pb::ChannelWithSecret>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let input = request.into_inner();
        let (channel, secret) = self.core.rotate_secret(id("id", &input.id)?, &input.signing_secret).await?;
        Ok(Response::new(pb::ChannelWithSecret {
            channel: Some(self.channel_to_pb(&channel)),
            signing_secret: secret,
        }))
    }

    async fn test_channel(
        &self,
        request: Request<pb::TestChannelRequest>,
    ) -> Result<Response<pb::DeliveryAttempt>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let channel_id = id("id", &request.into_inner().id)?;
        let outcome = self.core.test_channel(channel_id).await?;
        Ok(Response::new(pb::DeliveryAttempt {
            id: uuid::Uuid::now_v7().to_string(),
            delivery_id: String::new(),
            attempt: 1,
            started_at: ts(outcome.started_at),
            latency_ms: outcome.latency_ms,
            status_code: outcome.status_code,
            outcome: outcome.outcome.to_owned(),
            error: outcome.error,
            response_excerpt: outcome.excerpt,
            replica: String::new(),
        }))
    }

    async fn list_routing_rules(
        &self,
        request: Request<pb::ListRoutingRulesRequest>,
    ) -> Result<Response<pb::ListRoutingRulesResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let rules = self.core.list_rules().await?;
        Ok(Response::new(pb::ListRoutingRulesResponse { rules: rules.iter().map(rule_to_pb).collect() }))
    }

    async fn create_routing_rule(
        &self,
        request: Request<pb::RoutingRuleInput>,
    ) -> Result<Response<pb::RoutingRule>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let rule = self.core.create_rule(rule_input(request.into_inner())).await?;
        Ok(Response::new(rule_to_pb(&rule)))
    }

    async fn update_routing_rule(
        &self,
        request: Request<pb::UpdateRoutingRuleRequest>,
    ) -> Result<Response<pb::RoutingRule>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let input = request.into_inner();
        let rule_id = id("id", &input.id)?;
        let rule = self.core.update_rule(rule_id, rule_input(input.rule.unwrap_or_default())).await?;
        Ok(Response::new(rule_to_pb(&rule)))
    }

    async fn delete_routing_rule(
        &self,
        request: Request<pb::DeleteRoutingRuleRequest>,
    ) -> Result<Response<pb::DeleteRoutingRuleResponse>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        self.core.delete_rule(id("id", &request.into_inner().id)?).await?;
        Ok(Response::new(pb::DeleteRoutingRuleResponse {}))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let input = request.into_inner();
        let optional_id = |field: &str, raw: &str| -> Result<Option<uuid::Uuid>, Status> {
            if raw.is_empty() { Ok(None) } else { id(field, raw).map(Some) }
        };
        let filter = DeliveryFilter {
            channel_id: optional_id("channel_id", &input.channel_id)?,
            status: Some(input.status),
            event_type: Some(input.event_type),
            incident_id: Some(input.incident_id),
            event_id: optional_id("event_id", &input.event_id)?,
            page_size: rp_db::page_size(input.page_size, 50, 500),
            before: optional_id("page_token", &input.page_token)?,
        };
        let (views, next) = self.core.list_deliveries(filter).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: views.iter().map(delivery_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let view = self.core.get_delivery(id("id", &request.into_inner().id)?).await?;
        Ok(Response::new(delivery_to_pb(&view)))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let input = request.into_inner();
        let filter = DeliveryFilter {
            channel_id: if input.channel_id.is_empty() {
                None
            } else {
                Some(id("channel_id", &input.channel_id)?)
            },
            status: Some(crate::service::status::DEAD.into()),
            page_size: rp_db::page_size(input.page_size, 50, 500),
            before: if input.page_token.is_empty() {
                None
            } else {
                Some(id("page_token", &input.page_token)?)
            },
            ..DeliveryFilter::default()
        };
        let (views, next) = self.core.list_deliveries(filter).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: views.iter().map(delivery_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let input = request.into_inner();
        let ids =
            input.delivery_ids.iter().map(|raw| id("delivery_ids", raw)).collect::<Result<Vec<_>, _>>()?;
        let channel =
            if input.channel_id.is_empty() { None } else { Some(id("channel_id", &input.channel_id)?) };
        let replayed = self.core.replay(ids, channel).await?;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed_ids: replayed.into_iter().map(|id| id.to_string()).collect(),
        }))
    }

    async fn list_escalation_policies(
        &self,
        request: Request<pb::ListEscalationPoliciesRequest>,
    ) -> Result<Response<pb::ListEscalationPoliciesResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let policies = self.core.list_policies().await?;
        Ok(Response::new(pb::ListEscalationPoliciesResponse {
            policies: policies.iter().map(policy_to_pb).collect(),
        }))
    }

    async fn create_escalation_policy(
        &self,
        request: Request<pb::EscalationPolicyInput>,
    ) -> Result<Response<pb::EscalationPolicy>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let policy = self.core.create_policy(policy_input(request.into_inner())).await?;
        Ok(Response::new(policy_to_pb(&policy)))
    }

    async fn update_escalation_policy(
        &self,
        request: Request<pb::UpdateEscalationPolicyRequest>,
    ) -> Result<Response<pb::EscalationPolicy>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        let input = request.into_inner();
        let policy_id = id("id", &input.id)?;
        let policy =
            self.core.update_policy(policy_id, policy_input(input.policy.unwrap_or_default())).await?;
        Ok(Response::new(policy_to_pb(&policy)))
    }

    async fn delete_escalation_policy(
        &self,
        request: Request<pb::DeleteEscalationPolicyRequest>,
    ) -> Result<Response<pb::DeleteEscalationPolicyResponse>, Status> {
        self.authn.authorize(request.metadata(), WRITERS).await?;
        self.core.delete_policy(id("id", &request.into_inner().id)?).await?;
        Ok(Response::new(pb::DeleteEscalationPolicyResponse {}))
    }

    async fn list_escalations(
        &self,
        request: Request<pb::ListEscalationsRequest>,
    ) -> Result<Response<pb::ListEscalationsResponse>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let input = request.into_inner();
        let rows = self.core.list_escalations(input.status.trim(), input.incident_id.trim()).await?;
        Ok(Response::new(pb::ListEscalationsResponse {
            escalations: rows.iter().map(escalation_to_pb).collect(),
        }))
    }

    async fn get_escalation(
        &self,
        request: Request<pb::GetEscalationRequest>,
    ) -> Result<Response<pb::Escalation>, Status> {
        self.authn.authenticate(request.metadata()).await?;
        let row = self.core.get_escalation(id("id", &request.into_inner().id)?).await?;
        Ok(Response::new(escalation_to_pb(&row)))
    }

    async fn acknowledge_escalation(
        &self,
        request: Request<pb::AcknowledgeEscalationRequest>,
    ) -> Result<Response<pb::Escalation>, Status> {
        let principal = self.authn.authorize(request.metadata(), RESPONDERS).await?;
        let input = request.into_inner();
        rp_runtime::validate::text("note", &input.note, 500, false)?;
        let row = self.core.acknowledge(id("id", &input.id)?, &principal, "api", input.note.trim()).await?;
        Ok(Response::new(escalation_to_pb(&row)))
    }

    async fn acknowledge_escalation_by_token(
        &self,
        request: Request<pb::AcknowledgeByTokenRequest>,
    ) -> Result<Response<pb::Escalation>, Status> {
        let token = request.into_inner().token;
        if token.len() > 200 {
            return Err(ServiceError::Invalid("token is too long".into()).into());
        }
        let row = self.core.acknowledge_by_token(&token).await?;
        Ok(Response::new(escalation_to_pb(&row)))
    }
}
