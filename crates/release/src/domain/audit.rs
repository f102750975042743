//! The hash chain of the audit log. Row n stores `hash_n = SHA-256(hash_{n-1} ‖ canonical(row_n))`
//! and sequence numbers run without gaps, so editing any field of a row, deleting a row or
//! reordering rows makes verification fail at that row. Deleting the newest rows is only visible
//! against a head hash recorded elsewhere, which `VerifyAuditChain` returns for that purpose.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an entry that its hash covers.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryContent<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub at: DateTime<Utc>,
    pub actor_subject: &'a str,
    pub actor_email: &'a str,
    pub actor_kind: &'a str,
    pub request_id: &'a str,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub before_json: &'a str,
    pub after_json: &'a str,
}

/// Chains `content` onto `previous_hash`. Fields are length-prefixed so no two different rows
/// can serialise to the same bytes.
pub fn hash(previous_hash: &str, content: &EntryContent<'_>) -> String {
    let mut hasher = Sha256::new();
    let at = content.at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let seq = content.seq.to_string();
    for field in [
        previous_hash,
        seq.as_str(),
        content.id,
        at.as_str(),
        content.actor_subject,
        content.actor_email,
        content.actor_kind,
        content.request_id,
        content.action,
        content.resource_type,
        content.resource_id,
        content.before_json,
        content.after_json,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Where verification stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: i64,
    pub problem: String,
}

/// Incremental verifier: feed rows in sequence order.
pub struct Verifier {
    expected_seq: i64,
    previous_hash: String,
    pub checked: i64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self { expected_seq: 1, previous_hash: GENESIS.to_owned(), checked: 0 }
    }
}

impl Verifier {
    pub fn check(
        &mut self,
        content: &EntryContent<'_>,
        stored_prev_hash: &str,
        stored_hash: &str,
    ) -> Result<(), Break> {
        if content.seq != self.expected_seq {
            return Err(Break {
                seq: self.expected_seq,
                problem: format!("entry {} is missing (next entry is {})", self.expected_seq, content.seq),
            });
        }
        if stored_prev_hash != self.previous_hash {
            return Err(Break {
                seq: content.seq,
                problem: "previous-hash link does not match the entry before".into(),
            });
        }
        if hash(&self.previous_hash, content) != stored_hash {
            return Err(Break {
                seq: content.seq,
                problem: "content does not match its hash (edited)".into(),
            });
        }
        self.previous_hash = stored_hash.to_owned();
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    pub fn head(&self) -> &str {
        &self.previous_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(seq: i64, action: &str) -> EntryContent<'static> {
        EntryContent {
            seq,
            id: "id",
            at: DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z").unwrap().with_timezone(&Utc),
            actor_subject: "u1",
            actor_email: "a@b.c",
            actor_kind: "user",
            request_id: "r",
            action: Box::leak(action.to_owned().into_boxed_str()),
            resource_type: "deployment",
            resource_id: "d1",
            before_json: "{}",
            after_json: "{\"state\":\"in_progress\"}",
        }
    }

    fn chain(actions: &[&str]) -> Vec<(EntryContent<'static>, String, String)> {
        let mut previous = GENESIS.to_owned();
        actions
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let c = content(i as i64 + 1, a);
                let h = hash(&previous, &c);
                let row = (c, previous.clone(), h.clone());
                previous = h;
                row
            })
            .collect()
    }

    fn verify(rows: &[(EntryContent<'static>, String, String)]) -> Result<i64, Break> {
        let mut verifier = Verifier::default();
        for (c, prev, h) in rows {
            verifier.check(c, prev, h)?;
        }
        Ok(verifier.checked)
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(&["a", "b", "c"])).unwrap(), 3);
    }

    #[test]
    fn an_edited_deleted_or_relinked_row_breaks_the_chain() {
        let mut edited = chain(&["a", "b", "c"]);
        edited[1].0.after_json = "{\"state\":\"succeeded\"}";
        assert_eq!(
            verify(&edited).unwrap_err(),
            Break { seq: 2, problem: "content does not match its hash (edited)".into() }
        );

        let mut deleted = chain(&["a", "b", "c"]);
        deleted.remove(1);
        assert_eq!(verify(&deleted).unwrap_err().seq, 2);

        // Deleting a row and renumbering the rest is caught by the links.
        let mut renumbered = chain(&["a", "b", "c"]);
        renumbered.remove(1);
        renumbered[1].0.seq = 2;
        assert_eq!(verify(&renumbered).unwrap_err().seq, 2);

        // Recomputing the edited row's hash breaks the next row's link instead.
        let mut rehashed = chain(&["a", "b", "c"]);
        rehashed[1].0.action = "forged";
        rehashed[1].2 = hash(&rehashed[1].1, &rehashed[1].0);
        assert!(verify(&rehashed).unwrap_err().problem.contains("previous-hash"));
    }
}
