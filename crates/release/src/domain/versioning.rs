//! Next version and changelog from Conventional Commits (parsed by `git-conventional`, versions
//! by `semver`).
//!
//! Rules: `feat` → minor; `fix`, `perf` and `revert` → patch; `!` or a `BREAKING CHANGE:`
//! footer → major; other types change nothing. Before 1.0.0 the policy is explicit: by default a
//! breaking change bumps the minor version and a feature the minor version (like release-please's
//! `bump-minor-pre-major`); both are configurable. A pre-release identifier (`rc`) yields
//! `1.3.0-rc.1`, then `-rc.2` for further commits, and the stable `1.3.0` once no identifier is
//! asked for.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use git_conventional::Type;
use semver::{Prerelease, Version};

/// How far a set of commits moves the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bump {
    None,
    Patch,
    Minor,
    Major,
}

impl Bump {
    pub fn as_str(self) -> &'static str {
        match self {
            Bump::None => "none",
            Bump::Patch => "patch",
            Bump::Minor => "minor",
            Bump::Major => "major",
        }
    }
}

/// What happens before 1.0.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreMajorPolicy {
    /// A breaking change on 0.x bumps the minor version (0.4.2 → 0.5.0) instead of making 1.0.0.
    pub breaking_bumps_minor: bool,
    /// A feature on 0.x bumps the patch version (0.4.2 → 0.4.3) instead of the minor one.
    pub feature_bumps_patch: bool,
}

impl Default for PreMajorPolicy {
    fn default() -> Self {
        Self { breaking_bumps_minor: true, feature_bumps_patch: false }
    }
}

/// A commit as CI reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommitInput {
    pub sha: String,
    pub message: String,
    pub author: String,
    pub timestamp: Option<DateTime<Utc>>,
}

/// A commit understood as a Conventional Commit.
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    kind: String,
    scope: Option<String>,
    description: String,
    breaking: Option<String>,
    short_sha: String,
}

fn parse(commit: &CommitInput) -> Option<Parsed> {
    let message = commit.message.trim();
    let parsed = git_conventional::Commit::parse(message).ok()?;
    let breaking = parsed.breaking().then(|| {
        parsed.breaking_description().map(str::to_owned).unwrap_or_else(|| parsed.description().to_owned())
    });
    Some(Parsed {
        kind: parsed.type_().as_str().to_ascii_lowercase(),
        scope: parsed.scope().map(|s| s.as_str().to_owned()),
        description: parsed.description().to_owned(),
        breaking,
        short_sha: commit.sha.chars().take(7).collect(),
    })
}

fn bump_of(parsed: &Parsed) -> Bump {
    if parsed.breaking.is_some() {
        return Bump::Major;
    }
    match parsed.kind.as_str() {
        k if k == Type::FEAT.as_str() => Bump::Minor,
        k if k == Type::FIX.as_str() || k == Type::PERF.as_str() || k == Type::REVERT.as_str() => Bump::Patch,
        _ => Bump::None,
    }
}

/// The outcome of analysing commits.
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    pub version: Version,
    pub bump: Bump,
    pub changelog: String,
    pub ignored_commits: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VersioningError {
    #[error(
        "no releasable commits: none is a feat, fix, perf, revert or breaking change ({ignored} not conventional)"
    )]
    NothingToRelease { ignored: usize },
    #[error("{0:?} is not a valid pre-release identifier (letters, digits and dashes)")]
    BadPreRelease(String),
}

fn apply(bump: Bump, version: &Version) -> Version {
    match bump {
        Bump::Major => Version::new(version.major + 1, 0, 0),
        Bump::Minor => Version::new(version.major, version.minor + 1, 0),
        Bump::Patch | Bump::None => Version::new(version.major, version.minor, version.patch + 1),
    }
}

/// The level a release version stands for: x.0.0 is a major, x.y.0 a minor, else a patch.
fn level(version: &Version) -> Bump {
    match (version.minor, version.patch) {
        (0, 0) => Bump::Major,
        (_, 0) => Bump::Minor,
        _ => Bump::Patch,
    }
}

/// Computes the next version after `latest` (the app's highest existing version, if any).
pub fn next_version(
    latest: Option<&Version>,
    commits: &[CommitInput],
    policy: PreMajorPolicy,
    initial: &Version,
    pre_release: Option<&str>,
) -> Result<Computed, VersioningError> {
    if let Some(id) = pre_release {
        let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return Err(VersioningError::BadPreRelease(id.to_owned()));
        }
    }
    let parsed: Vec<(Parsed, &CommitInput)> =
        commits.iter().filter_map(|c| parse(c).map(|p| (p, c))).collect();
    let ignored = commits.len() - parsed.len();
    let mut bump = parsed.iter().map(|(p, _)| bump_of(p)).max().unwrap_or(Bump::None);
    if bump == Bump::None {
        return Err(VersioningError::NothingToRelease { ignored });
    }

    let stable = match latest {
        None => initial.clone(),
        Some(latest) if !latest.pre.is_empty() => {
            // Continuing a pre-release: its base already contains a bump of some level.
            let base = Version::new(latest.major, latest.minor, latest.patch);
            if bump > level(&base) {
                let previous = Version::new(base.major, if bump == Bump::Major { 0 } else { base.minor }, 0);
                apply(bump, &previous)
            } else {
                base
            }
        }
        Some(latest) => {
            if latest.major == 0 {
                if bump == Bump::Major && policy.breaking_bumps_minor {
                    bump = Bump::Minor;
                } else if bump == Bump::Minor && policy.feature_bumps_patch {
                    bump = Bump::Patch;
                }
            }
            apply(bump, latest)
        }
    };

    let version = match pre_release {
        None => stable,
        Some(id) => {
            // Next number for this identifier on this base: rc.1, rc.2, …
            let number = match latest {
                Some(l)
                    if !l.pre.is_empty()
                        && (l.major, l.minor, l.patch) == (stable.major, stable.minor, stable.patch) =>
                {
                    let mut parts = l.pre.as_str().splitn(2, '.');
                    match (parts.next(), parts.next().and_then(|n| n.parse::<u64>().ok())) {
                        (Some(current), Some(n)) if current == id => n + 1,
                        _ => 1,
                    }
                }
                _ => 1,
            };
            let mut version = stable;
            version.pre = Prerelease::new(&format!("{id}.{number}"))
                .map_err(|_| VersioningError::BadPreRelease(id.into()))?;
            version
        }
    };
    let changelog = changelog(&version, commits, Utc::now());
    Ok(Computed { version, bump, changelog, ignored_commits: ignored })
}

/// A release-please style changelog: breaking changes first, then Features, Bug Fixes,
/// Performance Improvements and Reverts; other commits are left out.
pub fn changelog(version: &Version, commits: &[CommitInput], date: DateTime<Utc>) -> String {
    let parsed: Vec<Parsed> = commits.iter().filter_map(parse).collect();
    let line = |p: &Parsed, text: &str| match &p.scope {
        Some(scope) => format!("* **{scope}:** {text} ({})\n", p.short_sha),
        None => format!("* {text} ({})\n", p.short_sha),
    };
    let mut out = format!("## {version} ({})\n", date.format("%Y-%m-%d"));
    let breaking: String = parsed.iter().filter_map(|p| p.breaking.as_ref().map(|b| line(p, b))).collect();
    if !breaking.is_empty() {
        let _ = write!(out, "\n### ⚠ BREAKING CHANGES\n\n{breaking}");
    }
    for (title, kinds) in [
        ("Features", &["feat"][..]),
        ("Bug Fixes", &["fix"][..]),
        ("Performance Improvements", &["perf"][..]),
        ("Reverts", &["revert"][..]),
    ] {
        let section: String = parsed
            .iter()
            .filter(|p| kinds.contains(&p.kind.as_str()))
            .map(|p| line(p, &p.description))
            .collect();
        if !section.is_empty() {
            let _ = write!(out, "\n### {title}\n\n{section}");
        }
    }
    out
}

/// Checks an explicit version.
pub fn parse_version(text: &str) -> Result<Version, String> {
    let text = text.trim().trim_start_matches('v');
    Version::parse(text).map_err(|e| format!("{text:?} is not a semantic version: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(messages: &[&str]) -> Vec<CommitInput> {
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| CommitInput {
                sha: format!("{i:07x}abcdef"),
                message: (*m).to_owned(),
                author: "dev".into(),
                timestamp: None,
            })
            .collect()
    }

    fn next(latest: Option<&str>, messages: &[&str], pre: Option<&str>) -> Result<String, VersioningError> {
        let latest = latest.map(|v| Version::parse(v).unwrap());
        next_version(
            latest.as_ref(),
            &commits(messages),
            PreMajorPolicy::default(),
            &Version::new(0, 1, 0),
            pre,
        )
        .map(|c| c.version.to_string())
    }

    #[test]
    fn version_computation_table() {
        /// (latest version, commit messages, pre-release identifier, expected next version)
        type Case<'a> = (Option<&'a str>, &'a [&'a str], Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            // Stable versions.
            (Some("1.1.0"), &["feat: add login"], None, "1.2.0"),
            (Some("1.1.0"), &["fix: leak"], None, "1.1.1"),
            (Some("1.1.0"), &["perf: faster"], None, "1.1.1"),
            (Some("1.1.0"), &["revert: feat: add login"], None, "1.1.1"),
            (Some("1.1.0"), &["feat!: redesign API"], None, "2.0.0"),
            (Some("1.1.0"), &["feat(api)!: redesign API"], None, "2.0.0"),
            (Some("1.1.0"), &["fix: tidy\n\nBREAKING CHANGE: config keys renamed"], None, "2.0.0"),
            (Some("1.1.0"), &["docs: readme", "fix: one", "feat: two"], None, "1.2.0"),
            // Pre-1.0 policy: breaking bumps minor, features bump minor.
            (Some("0.4.2"), &["feat!: break"], None, "0.5.0"),
            (Some("0.4.2"), &["feat: add"], None, "0.5.0"),
            (Some("0.4.2"), &["fix: bug"], None, "0.4.3"),
            // First release.
            (None, &["feat: first"], None, "0.1.0"),
            // Pre-releases.
            (Some("1.2.0"), &["feat: x"], Some("rc"), "1.3.0-rc.1"),
            (Some("1.3.0-rc.1"), &["fix: y"], Some("rc"), "1.3.0-rc.2"),
            (Some("1.3.0-rc.2"), &["fix: y"], None, "1.3.0"),
            (Some("1.3.0-rc.2"), &["feat!: z"], Some("rc"), "2.0.0-rc.1"),
            (Some("1.3.0-rc.2"), &["fix: y"], Some("beta"), "1.3.0-beta.1"),
            (Some("2.0.0-rc.1"), &["feat: more"], Some("rc"), "2.0.0-rc.2"),
        ];
        for (latest, messages, pre, expected) in cases {
            assert_eq!(
                next(*latest, messages, *pre).unwrap(),
                *expected,
                "{latest:?} + {messages:?} ({pre:?})"
            );
        }
    }

    #[test]
    fn the_pre_major_policy_is_configurable() {
        let strict = PreMajorPolicy { breaking_bumps_minor: false, feature_bumps_patch: true };
        let latest = Version::new(0, 4, 2);
        let run = |m: &str| {
            next_version(Some(&latest), &commits(&[m]), strict, &Version::new(0, 1, 0), None)
                .unwrap()
                .version
                .to_string()
        };
        assert_eq!(run("feat!: break"), "1.0.0");
        assert_eq!(run("feat: add"), "0.4.3");
    }

    #[test]
    fn nothing_releasable_is_an_error_that_counts_the_ignored() {
        let err = next(Some("1.0.0"), &["docs: readme", "chore: deps", "wip stuff"], None).unwrap_err();
        assert_eq!(err, VersioningError::NothingToRelease { ignored: 1 });
        assert!(matches!(
            next(Some("1.0.0"), &["feat: x"], Some("r c")),
            Err(VersioningError::BadPreRelease(_))
        ));
    }

    #[test]
    fn changelog_groups_like_release_please() {
        let log = changelog(
            &Version::new(2, 0, 0),
            &commits(&[
                "fix(db): close pool",
                "feat(api)!: drop v1\n\nBREAKING CHANGE: /v1 is gone",
                "feat: dark mode",
                "docs: nothing",
                "perf: cache",
                "revert: feat: widgets",
            ]),
            DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z").unwrap().with_timezone(&Utc),
        );
        let expected = "## 2.0.0 (2026-11-27)\n\n### ⚠ BREAKING CHANGES\n\n* **api:** /v1 is gone (0000001)\n\n\
                        ### Features\n\n* **api:** drop v1 (0000001)\n* dark mode (0000002)\n\n\
                        ### Bug Fixes\n\n* **db:** close pool (0000000)\n\n\
                        ### Performance Improvements\n\n* cache (0000004)\n\n\
                        ### Reverts\n\n* feat: widgets (0000005)\n";
        assert_eq!(log, expected);
    }

    #[test]
    fn explicit_versions_are_checked() {
        assert_eq!(parse_version("v1.2.3").unwrap(), Version::new(1, 2, 3));
        assert!(parse_version("1.2").unwrap_err().contains("not a semantic version"));
    }
}
