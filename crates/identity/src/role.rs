//! Roles and principals.

use std::{fmt, str::FromStr};

use rp_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// What a user or token may do. `admin` may do everything.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Creates releases, deploys to non-production environments.
    Developer,
    /// Reports quality checks, signs off staging.
    Qa,
    /// Approves and deploys to production.
    ReleaseManager,
    /// Runs hotfixes and rollbacks during incidents.
    IncidentCommander,
    /// Manages users, tokens, keys and configuration.
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Viewer, Role::Developer, Role::Qa, Role::ReleaseManager, Role::IncidentCommander, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Qa => "qa",
            Role::ReleaseManager => "release_manager",
            Role::IncidentCommander => "incident_commander",
            Role::Admin => "admin",
        }
    }

    pub fn to_proto(self) -> pb::Role {
        match self {
            Role::Viewer => pb::Role::Viewer,
            Role::Developer => pb::Role::Developer,
            Role::Qa => pb::Role::Qa,
            Role::ReleaseManager => pb::Role::ReleaseManager,
            Role::IncidentCommander => pb::Role::IncidentCommander,
            Role::Admin => pb::Role::Admin,
        }
    }

    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::Role::try_from(value).ok()? {
            pb::Role::Unspecified => None,
            pb::Role::Viewer => Some(Role::Viewer),
            pb::Role::Developer => Some(Role::Developer),
            pb::Role::Qa => Some(Role::Qa),
            pb::Role::ReleaseManager => Some(Role::ReleaseManager),
            pb::Role::IncidentCommander => Some(Role::IncidentCommander),
            pb::Role::Admin => Some(Role::Admin),
        }
    }

    /// Parses a comma-separated list, ignoring blanks; fails on an unknown role.
    pub fn parse_list(text: &str) -> Result<Vec<Role>, String> {
        let mut roles: Vec<Role> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    pub fn join(roles: &[Role]) -> String {
        roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; known roles: {}", Role::join(&Role::ALL)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    ApiToken,
    /// Release Pilot itself (automatic rollbacks, schedulers).
    System,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::ApiToken => "api_token",
            PrincipalKind::System => "system",
        }
    }
}

/// The identity a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id (for API tokens: the owning user's id).
    pub subject: String,
    pub email: String,
    pub roles: Vec<Role>,
    pub kind: PrincipalKind,
    pub token_id: Option<String>,
    /// Request id of the call, for audit records.
    pub request_id: Option<String>,
}

impl Principal {
    /// Release Pilot acting on its own.
    pub fn system() -> Self {
        Self {
            subject: "system".into(),
            email: String::new(),
            roles: vec![Role::Admin],
            kind: PrincipalKind::System,
            token_id: None,
            request_id: None,
        }
    }

    /// True when the principal holds `role` (admins hold every role).
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Succeeds when the principal holds any of `roles`.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), AuthError> {
        if roles.iter().any(|r| self.has_role(*r)) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(Role::join(roles)))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// The id recorded as "who" in events and audit records.
    pub fn actor_id(&self) -> &str {
        self.token_id.as_deref().unwrap_or(&self.subject)
    }

    pub fn to_proto(&self) -> pb::Principal {
        pb::Principal {
            subject: self.subject.clone(),
            email: self.email.clone(),
            roles: self.roles.iter().map(|r| r.to_proto() as i32).collect(),
            kind: self.kind.as_str().to_owned(),
            token_id: self.token_id.clone().unwrap_or_default(),
        }
    }

    pub fn from_proto(principal: &pb::Principal) -> Self {
        Self {
            subject: principal.subject.clone(),
            email: principal.email.clone(),
            roles: principal.roles.iter().filter_map(|r| Role::from_proto(*r)).collect(),
            kind: match principal.kind.as_str() {
                "api_token" => PrincipalKind::ApiToken,
                "system" => PrincipalKind::System,
                _ => PrincipalKind::User,
            },
            token_id: Some(principal.token_id.clone()).filter(|t| !t.is_empty()),
            request_id: None,
        }
    }

    /// The actor of an event payload.
    pub fn actor(&self) -> rp_proto::events::v1::Actor {
        rp_proto::events::v1::Actor {
            subject: self.actor_id().to_owned(),
            email: self.email.clone(),
            kind: self.kind.as_str().to_owned(),
            request_id: self.request_id.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_text_and_proto() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(Role::from_proto(role.to_proto() as i32), Some(role));
        }
        assert_eq!(Role::from_proto(0), None);
        assert!("root".parse::<Role>().unwrap_err().contains("release_manager"));
        assert_eq!(Role::parse_list(" qa, viewer,qa ").unwrap(), vec![Role::Viewer, Role::Qa]);
    }

    #[test]
    fn admin_holds_every_role_and_others_only_their_own() {
        let mut principal = Principal::system();
        assert!(principal.require_any(&[Role::ReleaseManager]).is_ok());
        principal.roles = vec![Role::Developer];
        assert!(principal.require_any(&[Role::Developer, Role::Qa]).is_ok());
        assert_eq!(
            principal.require_any(&[Role::ReleaseManager]),
            Err(AuthError::Forbidden("release_manager".into()))
        );
    }
}
