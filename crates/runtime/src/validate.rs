//! Input checks shared by the services: every string that reaches a database is length-bounded
//! and free of control characters (PostgreSQL refuses NUL in text, and nobody means to send one).

use crate::error::{ServiceError, ServiceResult};

/// Accepts text of at most `max` characters without control characters (newlines and tabs
/// allowed when `multiline`).
pub fn text(field: &str, value: &str, max: usize, multiline: bool) -> ServiceResult<()> {
    if value.chars().count() > max {
        return Err(ServiceError::Invalid(format!("{field} must be at most {max} characters")));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(ServiceError::Invalid(format!("{field} must not contain control characters")));
    }
    Ok(())
}

/// A name used in URLs and metric labels (apps, environments): 2-63 lowercase letters, digits
/// and inner dashes.
pub fn slug(field: &str, value: &str) -> ServiceResult<()> {
    let ok = (2..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "{field} {value:?} must be 2-63 characters of lowercase letters, digits and inner dashes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::{slug, text};

    #[test]
    fn slugs_are_lowercase_words_joined_by_dashes() {
        for good in ["ab", "checkout", "svc-2", &"x".repeat(63)] {
            assert!(slug("app", good).is_ok(), "{good}");
        }
        for bad in ["", "a", "Checkout", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(slug("app", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_characters_and_length_are_refused() {
        assert!(text("f", "fine text", 20, false).is_ok());
        assert!(text("f", "two\nlines", 20, true).is_ok());
        assert!(text("f", "two\nlines", 20, false).is_err());
        assert!(text("f", "nul\0", 20, true).is_err());
        assert!(text("f", "\u{85}", 20, true).is_err());
        assert!(text("f", &"x".repeat(21), 20, false).unwrap_err().to_string().contains("at most 20"));
    }
}
