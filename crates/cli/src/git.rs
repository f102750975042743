//! Commits since the last release tag, read with the `git` command.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use rp_proto::release::v1 as pb;

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new("git").arg("-C").arg(repo).args(args).output().context("cannot run git; is it installed?")
}

/// The newest tag starting with `prefix` reachable from HEAD, if any.
pub fn last_release_tag(repo: &Path, prefix: &str) -> anyhow::Result<Option<String>> {
    let pattern = format!("{prefix}*");
    let output = git(repo, &["describe", "--tags", "--abbrev=0", "--match", &pattern])?;
    if output.status.success() {
        Ok(Some(String::from_utf8_lossy(&output.stdout).trim().to_owned()))
    } else {
        // No matching tag: every commit is new.
        Ok(None)
    }
}

const FIELD: char = '\u{1f}';
const RECORD: char = '\u{1e}';

/// Commits after `since` (all commits when `None`), oldest first.
pub fn commits_since(repo: &Path, since: Option<&str>) -> anyhow::Result<Vec<pb::Commit>> {
    let range = match since {
        Some(tag) => format!("{tag}..HEAD"),
        None => "HEAD".to_owned(),
    };
    let format = format!("--format=%H{FIELD}%an{FIELD}%aI{FIELD}%B{RECORD}");
    let output = git(repo, &["log", "--reverse", &format, &range])?;
    if !output.status.success() {
        bail!("git log failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut commits = Vec::new();
    for record in text.split(RECORD).map(str::trim).filter(|r| !r.is_empty()) {
        let mut fields = record.splitn(4, FIELD);
        let (Some(sha), Some(author), Some(date), Some(message)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let timestamp = chrono::DateTime::parse_from_rfc3339(date.trim())
            .ok()
            .map(|t| rp_proto::timestamp(std::time::SystemTime::from(t.with_timezone(&chrono::Utc))));
        commits.push(pb::Commit {
            sha: sha.trim().to_owned(),
            message: message.trim().to_owned(),
            author: author.trim().to_owned(),
            timestamp,
        });
    }
    Ok(commits)
}

/// Tags HEAD with the new version.
pub fn tag(repo: &Path, name: &str) -> anyhow::Result<()> {
    let output = git(repo, &["tag", name])?;
    if !output.status.success() {
        bail!("git tag {name} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
