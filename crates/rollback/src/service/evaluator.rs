//! The evaluator: claims analyses (leases), evaluates their rules when samples arrive and at
//! least every `evaluation_interval_ms`, stores decision records, and hands decisions to the
//! actions. One loop per replica; everything it evaluates is in memory.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rp_runtime::CancellationToken;
use sea_orm::{ColumnTrait, Condition, EntityTrait, IntoActiveModel as _, QueryFilter, sea_query::Expr};
use uuid::Uuid;

use super::{ExternalJob, RollbackCore, lock, names, watcher::status};
use crate::{
    domain::{
        alertmanager::Alert,
        evaluate::{Observation, RuleState, Verdict, evaluate, router_value},
        policy::{Action, Comparison, Metric, Rule, Source},
    },
    store::{alerts, analyses, measurements, policies},
};

/// An analysis this replica holds, with its rule clocks.
struct Watched {
    row: analyses::Model,
    states: BTreeMap<String, RuleState>,
    /// Per rule: the last stored verdict and when.
    last_recorded: HashMap<String, (Verdict, DateTime<Utc>)>,
    /// The rule that asked for a pause, and when; no second pause until it is resumed, unless
    /// the first never took effect (the release service refuses to pause a step it is still
    /// applying, or the call failed): then it is asked again after `PAUSE_RETRY`.
    paused_for: Option<(String, Instant)>,
    /// Alert rules that alerted during the current breach.
    alerted: HashSet<String>,
    states_changed: bool,
}

impl Watched {
    fn new(row: analyses::Model) -> Self {
        let states = serde_json::from_str(&row.rule_state).unwrap_or_default();
        Self {
            row,
            states,
            last_recorded: HashMap::new(),
            paused_for: None,
            alerted: HashSet::new(),
            states_changed: false,
        }
    }
}

/// What an evaluation decided.
pub(crate) enum Decision {
    Rollback { rule: Rule, reason: String, measurement_ids: Vec<Uuid>, first_bad: DateTime<Utc> },
    Pause { rule: Rule, reason: String, measurement_ids: Vec<Uuid> },
    Alert { rule: Rule, reason: String, measurement_ids: Vec<Uuid> },
}

#[derive(Default)]
struct Policies {
    by_target: HashMap<(String, String), Arc<Vec<Rule>>>,
    defaults: Arc<Vec<Rule>>,
    generation: u64,
    loaded_at: Option<Instant>,
}

#[derive(Default)]
struct Alerts {
    firing: Vec<Alert>,
    generation: u64,
    loaded_at: Option<Instant>,
}

/// Cached copies (policies, alerts) are refreshed at least this often, for changes made on
/// another replica whose announcement was lost.
const REFRESH: Duration = Duration::from_secs(5);
/// How long a pause that has not shown up in the deployment's phase waits before it is asked again.
const PAUSE_RETRY: Duration = Duration::from_secs(1);

pub async fn run(core: Arc<RollbackCore>, shutdown: CancellationToken) {
    let settings = &core.config.rollback;
    let interval = Duration::from_millis(settings.evaluation_interval_ms.max(20));
    let lease = Duration::from_secs(settings.lease_secs.max(1));
    let renew_every = lease / 3;
    let mut watched: HashMap<Uuid, Watched> = HashMap::new();
    let mut policies = Policies { defaults: Arc::new(core.default_rules()), ..Default::default() };
    let mut alerts = Alerts::default();
    let mut last_claim: Option<Instant> = None;
    let mut next_full = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = core.wake.notified() => {}
            _ = tokio::time::sleep_until(next_full.into()) => {}
        }
        let started = Instant::now();
        if let Err(err) = refresh_policies(&core, &mut policies).await {
            tracing::warn!(error = %err, "cannot load health policies");
        }
        if let Err(err) = refresh_alerts(&core, &mut alerts).await {
            tracing::warn!(error = %err, "cannot load alerts");
        }
        let claim_due = last_claim.is_none_or(|at| at.elapsed() >= renew_every);
        if core.reload.swap(false, Ordering::SeqCst) || claim_due {
            match claim(&core, &mut watched, lease, &policies).await {
                Ok(()) => last_claim = Some(Instant::now()),
                Err(err) => tracing::warn!(error = %err, "cannot claim analyses"),
            }
        }
        let full = Instant::now() >= next_full;
        if full {
            next_full = Instant::now() + interval;
            core.traffic.prune(Utc::now());
        }
        let dirty = std::mem::take(&mut *lock(&core.dirty));
        let now = Utc::now();
        let acting = lock(&core.acting).clone();
        let mut records = Vec::new();
        let mut decisions = Vec::new();
        for (id, item) in watched.iter_mut() {
            if acting.contains(id)
                || !(full || dirty.contains(&(item.row.app.clone(), item.row.environment.clone())))
            {
                continue;
            }
            let rules = policies.rules_for(&item.row.app, &item.row.environment);
            let decided = evaluate_analysis(&core, item, &rules, &alerts.firing, now, &mut records);
            decisions.extend(decided.into_iter().map(|d| (item.row.clone(), d)));
        }
        if let Err(err) = persist(&core, &mut watched, records).await {
            tracing::warn!(error = %err, "cannot store decision records");
        }
        for (row, decision) in decisions {
            if matches!(decision, Decision::Rollback { .. }) {
                // Decided: nothing more to evaluate (a rollback that must be retried puts the
                // analysis back and asks for a reload).
                watched.remove(&row.id);
            }
            super::actions::spawn(core.clone(), row, decision);
        }
        metrics::gauge!(names::WATCHED).set(watched.len() as f64);
        metrics::histogram!(names::EVALUATION_SECONDS).record(started.elapsed().as_secs_f64());
    }
    release_leases(&core).await;
}

impl Policies {
    fn rules_for(&self, app: &str, environment: &str) -> Arc<Vec<Rule>> {
        self.by_target
            .get(&(app.to_owned(), environment.to_owned()))
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }
}

async fn refresh_policies(core: &RollbackCore, cache: &mut Policies) -> Result<(), sea_orm::DbErr> {
    let generation = core.policy_generation.load(Ordering::SeqCst);
    if cache.generation == generation && cache.loaded_at.is_some_and(|at| at.elapsed() < REFRESH) {
        return Ok(());
    }
    let rows = policies::Entity::find().all(&core.db.conn).await?;
    cache.by_target = rows
        .into_iter()
        .filter_map(|row| {
            let rules: Vec<Rule> = serde_json::from_str(&row.rules).ok()?;
            Some(((row.app, row.environment), Arc::new(rules)))
        })
        .collect();
    cache.generation = generation;
    cache.loaded_at = Some(Instant::now());
    let longest = cache
        .by_target
        .values()
        .flat_map(|rules| rules.iter())
        .chain(cache.defaults.iter())
        .filter(|rule| matches!(rule.source, Source::Router))
        .map(|rule| rule.window_seconds + rule.for_seconds)
        .max()
        .unwrap_or(60);
    core.traffic.set_keep(longest.min(crate::domain::policy::MAX_ROUTER_WINDOW_SECONDS));
    Ok(())
}

async fn refresh_alerts(core: &RollbackCore, cache: &mut Alerts) -> Result<(), sea_orm::DbErr> {
    let generation = core.alert_generation.load(Ordering::SeqCst);
    if cache.generation == generation && cache.loaded_at.is_some_and(|at| at.elapsed() < REFRESH) {
        return Ok(());
    }
    let rows = alerts::Entity::find().filter(alerts::Column::Status.eq("firing")).all(&core.db.conn).await?;
    cache.firing = rows
        .into_iter()
        .map(|row| Alert {
            fingerprint: row.fingerprint,
            app: row.app,
            environment: row.environment,
            version: row.version,
            alertname: row.alertname,
            severity: row.severity,
            firing: true,
        })
        .collect();
    cache.generation = generation;
    cache.loaded_at = Some(Instant::now());
    Ok(())
}

/// Takes free or expired leases of running analyses and renews ours, then loads what we hold.
async fn claim(
    core: &RollbackCore,
    watched: &mut HashMap<Uuid, Watched>,
    lease: Duration,
    policies: &Policies,
) -> Result<(), sea_orm::DbErr> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
    use analyses::Column as C;
    analyses::Entity::update_many()
        .col_expr(C::LeaseHolder, Expr::value(core.replica.clone()))
        .col_expr(C::LeaseExpiresAt, Expr::value(until))
        .filter(C::Status.eq(status::RUNNING))
        .filter(
            Condition::any()
                .add(C::LeaseHolder.is_null())
                .add(C::LeaseHolder.eq(core.replica.clone()))
                .add(C::LeaseExpiresAt.lt(now)),
        )
        .exec(&core.db.conn)
        .await?;
    let held = analyses::Entity::find()
        .filter(C::Status.eq(status::RUNNING))
        .filter(C::LeaseHolder.eq(core.replica.clone()))
        .all(&core.db.conn)
        .await?;
    let acting = lock(&core.acting).clone();
    let ids: HashSet<Uuid> = held.iter().map(|row| row.id).collect();
    watched.retain(|id, _| ids.contains(id) || acting.contains(id));
    for row in held {
        match watched.get_mut(&row.id) {
            Some(item) => {
                if item.row.phase == "paused" && row.phase != "paused" {
                    // Someone resumed: the pausing rule's clock starts again.
                    if let Some((rule, _)) = item.paused_for.take() {
                        item.states.remove(&rule);
                        item.states_changed = true;
                    }
                }
                item.row = row;
            }
            None => {
                tracing::info!(analysis = %row.id, app = row.app, environment = row.environment,
                    version = row.version, replica = core.replica, "watching deployment");
                watched.insert(row.id, Watched::new(row));
            }
        }
    }
    // The poller reads the external sources of what we hold.
    let jobs = watched
        .values()
        .flat_map(|item| {
            policies
                .rules_for(&item.row.app, &item.row.environment)
                .iter()
                .filter(|rule| matches!(rule.source, Source::Prometheus { .. } | Source::HttpProbe { .. }))
                .map(|rule| ExternalJob {
                    analysis_id: item.row.id,
                    app: item.row.app.clone(),
                    environment: item.row.environment.clone(),
                    version: item.row.version.clone(),
                    stable_version: item.row.stable_version.clone(),
                    rule: rule.clone(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    *lock(&core.external_jobs) = jobs;
    Ok(())
}

/// Evaluates every applicable rule of one analysis; returns what to do.
fn evaluate_analysis(
    core: &RollbackCore,
    item: &mut Watched,
    rules: &[Rule],
    firing: &[Alert],
    now: DateTime<Utc>,
    records: &mut Vec<measurements::Model>,
) -> Vec<Decision> {
    let record_every = chrono::Duration::milliseconds(core.config.rollback.record_interval_ms as i64);
    let row = item.row.clone();
    let mut rollback: Vec<(Rule, String, Uuid)> = Vec::new();
    let mut pause: Vec<(Rule, String, Uuid)> = Vec::new();
    let mut alert: Vec<(Rule, String, Uuid)> = Vec::new();
    let mut newest_sample = None;
    for rule in rules.iter().filter(|rule| rule.applies_at(row.weight)) {
        let (observation, query) = observe(core, &row, rule, firing, now, &mut newest_sample);
        let state = item.states.entry(rule.name.clone()).or_default();
        let before = state.clone();
        let outcome = evaluate(rule, observation, state, now);
        if *state != before {
            item.states_changed = true;
        }
        metrics::counter!(names::EVALUATIONS_TOTAL, "verdict" => verdict_text(outcome.verdict)).increment(1);
        let last = item.last_recorded.get(&rule.name);
        let store = outcome.verdict.acts()
            || last.is_none_or(|(verdict, at)| *verdict != outcome.verdict || now - *at >= record_every);
        if outcome.verdict == Verdict::Healthy {
            item.alerted.remove(&rule.name);
        }
        if !store && outcome.verdict != Verdict::NoDataPause {
            continue;
        }
        let record = measurements::Model {
            id: Uuid::now_v7(),
            analysis_id: row.id,
            rule: rule.name.clone(),
            metric: super::queries::enum_text(&rule.metric),
            query,
            value: observation.value.filter(|v| v.is_finite()),
            baseline: observation.baseline.filter(|v| v.is_finite()),
            compared: outcome.compared.filter(|v| v.is_finite()),
            operator: super::queries::enum_text(&rule.operator),
            threshold: rule.threshold,
            samples: observation.samples.min(i64::MAX as u64) as i64,
            weight: row.weight,
            verdict: verdict_text(outcome.verdict).into(),
            action: super::queries::enum_text(&rule.action),
            at: now,
        };
        item.last_recorded.insert(rule.name.clone(), (outcome.verdict, now));
        if outcome.verdict == Verdict::NoDataPause {
            // "Hold the deployment until data arrives", whatever the rule's action.
            let reason = format!(
                "{}: no data ({} samples, {} needed)",
                rule.name,
                observation.samples,
                rule.min_samples.max(1)
            );
            pause.push((rule.clone(), reason, record.id));
        } else if outcome.verdict.acts() {
            let reason = explain(rule, &observation, outcome.compared);
            let entry = (rule.clone(), reason, record.id);
            match rule.action {
                Action::Rollback => rollback.push(entry),
                Action::Pause => pause.push(entry),
                Action::Alert => alert.push(entry),
            }
        }
        records.push(record);
    }
    if let Some(at) = newest_sample {
        metrics::histogram!(names::DECISION_LAG_SECONDS)
            .record((now - at).num_milliseconds().max(0) as f64 / 1000.0);
    }
    let mut decisions = Vec::new();
    if !rollback.is_empty() {
        // The most severe rule names the rollback; every acting record is its evidence.
        rollback.sort_by_key(|(rule, _, _)| std::cmp::Reverse(rule.severity));
        let ids = rollback.iter().map(|(_, _, id)| *id).collect();
        let (rule, reason, _) = rollback.swap_remove(0);
        let first_bad = first_bad_sample(core, &row, &rule, item.states.get(&rule.name), now);
        decisions.push(Decision::Rollback { rule, reason, measurement_ids: ids, first_bad });
        return decisions;
    }
    let may_pause = item.paused_for.as_ref().is_none_or(|(_, asked)| asked.elapsed() >= PAUSE_RETRY);
    if let Some((rule, reason, id)) = pause.into_iter().next()
        && may_pause
        && row.phase != "paused"
    {
        item.paused_for = Some((rule.name.clone(), Instant::now()));
        decisions.push(Decision::Pause { rule, reason, measurement_ids: vec![id] });
    }
    for (rule, reason, id) in alert {
        if item.alerted.insert(rule.name.clone()) {
            decisions.push(Decision::Alert { rule, reason, measurement_ids: vec![id] });
        }
    }
    decisions
}

/// The observation of one rule, and what was asked (the rendered query).
fn observe(
    core: &RollbackCore,
    row: &analyses::Model,
    rule: &Rule,
    firing: &[Alert],
    now: DateTime<Utc>,
    newest_sample: &mut Option<DateTime<Utc>>,
) -> (Observation, String) {
    let window = chrono::Duration::seconds(rule.window_seconds as i64);
    match &rule.source {
        Source::Router => {
            // Only traffic since the analysis began: a version deployed again right after a
            // rollback must not be judged on its previous run's samples.
            let own_window = window.min(now - row.started_at).max(chrono::Duration::zero());
            let aggregate = core.traffic.aggregate(&row.app, &row.environment, &row.version, now, own_window);
            let (value, samples) = router_value(rule.metric, &aggregate, own_window);
            let baseline = (rule.comparison == Comparison::RelativeToStable
                && !row.stable_version.is_empty())
            .then(|| {
                let stable =
                    core.traffic.aggregate(&row.app, &row.environment, &row.stable_version, now, window);
                router_value(rule.metric, &stable, window).0
            })
            .flatten();
            let newest =
                core.traffic.with_series(&row.app, &row.environment, &row.version, |series| series.newest());
            if newest > *newest_sample {
                *newest_sample = newest;
            }
            let query = format!(
                "router: {} of {} {} in {} over {}s",
                super::queries::enum_text(&rule.metric),
                row.app,
                row.version,
                row.environment,
                rule.window_seconds
            );
            (Observation { value, baseline, samples }, query)
        }
        Source::Prometheus { .. } | Source::HttpProbe { .. } => {
            let stale =
                chrono::Duration::milliseconds(core.config.rollback.poll_interval_ms as i64 * 3 + 10_000);
            let reading = lock(&core.external).get(&(row.id, rule.name.clone())).cloned();
            match reading.filter(|r| now - r.at <= stale) {
                Some(reading) => (
                    Observation {
                        value: reading.value,
                        baseline: reading.baseline,
                        samples: reading.samples,
                    },
                    reading.query,
                ),
                None => (Observation { value: None, baseline: None, samples: 0 }, "(not read yet)".into()),
            }
        }
        Source::Alertmanager { alertname } => {
            let matching = firing
                .iter()
                .filter(|alert| alert.matches(&row.app, &row.environment, &row.version, alertname))
                .count();
            let query = format!(
                "alertmanager: app={} environment={} version={}{}",
                row.app,
                row.environment,
                row.version,
                if alertname.is_empty() { String::new() } else { format!(" alertname={alertname}") }
            );
            (Observation { value: Some(matching as f64), baseline: None, samples: 1 }, query)
        }
    }
}

/// Why a rule acted, in one line.
fn explain(rule: &Rule, observation: &Observation, compared: Option<f64>) -> String {
    let unit = match rule.metric {
        Metric::ErrorRate => "%",
        Metric::LatencyP95 | Metric::LatencyP99 => " ms",
        Metric::RequestRate => " rps",
        _ => "",
    };
    let measured = match (rule.comparison, compared, observation.value, observation.baseline) {
        (Comparison::RelativeToStable, Some(off), Some(value), Some(baseline)) => {
            format!("{value:.2}{unit} is {off:.1}% off the stable version's {baseline:.2}{unit}")
        }
        (_, _, Some(value), _) => format!("{value:.2}{unit}"),
        _ => "no data".to_owned(),
    };
    let during = if rule.for_seconds > 0 { format!(" for {}s", rule.for_seconds) } else { String::new() };
    format!(
        "{}: {measured} {} {}{unit} over {}s ({} samples){during}",
        rule.name,
        rule.operator.symbol(),
        rule.threshold,
        rule.window_seconds,
        observation.samples
    )
}

/// When the evidence began: the first bad traffic sample of the current breach, else when the
/// rule first saw the breach.
fn first_bad_sample(
    core: &RollbackCore,
    row: &analyses::Model,
    rule: &Rule,
    state: Option<&RuleState>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let breached_since = state.and_then(|s| s.breached_since).unwrap_or(now);
    if matches!(rule.source, Source::Router) && rule.comparison == Comparison::Absolute {
        let lookback = chrono::Duration::seconds((rule.window_seconds + rule.for_seconds) as i64);
        let since = (now - lookback).max(row.started_at);
        let found = core
            .traffic
            .with_series(&row.app, &row.environment, &row.version, |series| series.first_breach(rule, since));
        if let Some(at) = found {
            return at.min(breached_since);
        }
    }
    breached_since
}

/// Stores the decision records of a pass and the changed rule clocks, in one transaction.
async fn persist(
    core: &RollbackCore,
    watched: &mut HashMap<Uuid, Watched>,
    records: Vec<measurements::Model>,
) -> Result<(), sea_orm::DbErr> {
    let changed: Vec<(Uuid, String)> = watched
        .iter_mut()
        .filter(|(_, item)| item.states_changed)
        .map(|(id, item)| {
            item.states_changed = false;
            (*id, serde_json::to_string(&item.states).unwrap_or_else(|_| "{}".into()))
        })
        .collect();
    if records.is_empty() && changed.is_empty() {
        return Ok(());
    }
    let txn = core.db.begin_write().await?;
    // Bounded statements: SQLite allows 32766 parameters, each record has 16.
    for chunk in records.chunks(500) {
        measurements::Entity::insert_many(chunk.iter().cloned().map(|r| r.into_active_model()))
            .exec_without_returning(&txn)
            .await?;
    }
    for (id, state) in changed {
        analyses::Entity::update_many()
            .col_expr(analyses::Column::RuleState, Expr::value(state))
            .filter(analyses::Column::Id.eq(id))
            .exec(&txn)
            .await?;
    }
    txn.commit().await
}

/// On a clean shutdown the leases are given up, so another replica takes over at once.
async fn release_leases(core: &RollbackCore) {
    let released = analyses::Entity::update_many()
        .col_expr(analyses::Column::LeaseHolder, Expr::value(Option::<String>::None))
        .col_expr(analyses::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(analyses::Column::LeaseHolder.eq(core.replica.clone()))
        .filter(analyses::Column::Status.eq(status::RUNNING))
        .exec(&core.db.conn)
        .await;
    if let Err(err) = released {
        tracing::warn!(error = %err, "leases not released; they expire on their own");
    }
}

pub(crate) fn verdict_text(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Healthy => "healthy",
        Verdict::Breaching => "breaching",
        Verdict::Failed => "failed",
        Verdict::NoDataPause => "no_data_pause",
        Verdict::NoDataFail => "no_data_fail",
        Verdict::NoDataPass => "no_data_pass",
        Verdict::NoDataExtend => "no_data_extend",
    }
}
