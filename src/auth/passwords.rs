//! Passwords: argon2id (the crate's defaults follow the OWASP recommendation) and the policy
//! new passwords must meet.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::ApiError;

pub fn hash(password: &str) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Constant-time verification; a malformed stored hash verifies as false.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash of a random password: checked against when the email is unknown, so a wrong email
/// costs the same time as a wrong password and timing does not reveal which accounts exist.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&ulid::Ulid::new().to_string()).unwrap_or_default())
}

/// The rules a new password must meet; the error names the rule it breaks.
pub fn check_policy(password: &str, min_length: usize, email: &str) -> Result<(), ApiError> {
    let field = "password";
    if password.chars().count() < min_length {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at least {min_length} characters"),
        ));
    }
    if password.len() > 256 {
        return Err(ApiError::invalid_field(field, "must be at most 256 bytes"));
    }
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if classes < 3 {
        return Err(ApiError::invalid_field(
            field,
            "must mix at least three of: lowercase, uppercase, digits, symbols",
        ));
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.len() >= 3 && password.to_lowercase().contains(&local) {
        return Err(ApiError::invalid_field(
            field,
            "must not contain the email address",
        ));
    }
    const COMMON: [&str; 8] = [
        "password",
        "123456",
        "qwerty",
        "letmein",
        "welcome",
        "switchboard",
        "admin",
        "iloveyou",
    ];
    let lower = password.to_lowercase();
    if let Some(word) = COMMON.iter().find(|w| lower.contains(*w)) {
        return Err(ApiError::invalid_field(
            field,
            format!("must not contain the common password `{word}`"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("Correct-horse-9").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("Correct-horse-9", &h));
        assert!(!verify("correct-horse-9", &h));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn policy_names_the_rule() {
        for (pw, rule) in [
            ("Short-1", "at least 12"),
            ("alllowercaseletters", "three of"),
            ("Ada.Lovelace-2024", "email"),
            ("MyPassword-2024!", "common"),
        ] {
            let err = check_policy(pw, 12, "ada.lovelace@example.com")
                .unwrap_err()
                .to_string();
            assert!(err.contains(rule), "{pw}: {err}");
        }
        check_policy("Tangerine-Kite-42", 12, "ada@example.com").unwrap();
    }
}
