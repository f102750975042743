//! Input validation with messages a user can act on.

pub fn email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.contains(|c: char| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.starts_with('.') && !domain.contains('@')
        });
    if valid { Ok(email) } else { Err(format!("{raw:?} is not a valid e-mail address")) }
}

pub fn password(password: &str, min_length: usize) -> Result<(), String> {
    let length = password.chars().count();
    if length < min_length {
        return Err(format!("password must be at least {min_length} characters"));
    }
    if length > 1024 {
        return Err("password must be at most 1024 characters".into());
    }
    Ok(())
}

pub fn name(field: &str, value: &str, max: usize) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.chars().count() > max {
        return Err(format!("{field} must be at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_or_refused() {
        assert_eq!(email(" Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "@example.com", "ada@", "a da@example.com", "a@b@c", "ada@.com"] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_and_names_have_bounds() {
        assert!(password("short", 12).is_err());
        assert!(password("long-enough-password", 12).is_ok());
        assert!(name("name", "   ", 10).is_err());
        assert!(name("name", "ci\u{7}", 10).is_err());
        assert_eq!(name("name", " deploy bot ", 20).unwrap(), "deploy bot");
    }
}
