//! NATS subject matching (`*` matches one token, `>` the remaining ones), for the in-process bus.

/// True when `subject` matches the NATS-style `filter`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut filter_tokens = filter.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (filter_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(f), Some(s)) if f == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_follow_nats_rules() {
        let cases = [
            ("rp.>", "rp.deployment.started", true),
            ("rp.>", "rp", false),
            ("rp.*.started", "rp.deployment.started", true),
            ("rp.*", "rp.deployment.started", false),
            ("rp.deployment.started", "rp.deployment.started", true),
            ("rp.deployment.started", "rp.deployment.failed", false),
            ("rp.deployment.>", "rp.release.created", false),
            (">", "anything.at.all", true),
        ];
        for (filter, subject, expected) in cases {
            assert_eq!(subject_matches(filter, subject), expected, "{filter} vs {subject}");
        }
    }
}
