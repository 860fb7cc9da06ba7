//! Action names: what a command or event is called.

use crate::Violation;

/// The longest action name accepted, in bytes.
pub const MAX_ACTION_LEN: usize = 200;

/// Checks an action name: non-empty, at most [`MAX_ACTION_LEN`] bytes, made of
/// ASCII letters, digits, `-`, `_`, `.` and `/`, and neither `.` nor `..`
/// (an action names its schema's URL, `/schemas/{action}`, and clients
/// resolve those two away in a path, even percent-encoded).
///
/// # Errors
/// A [`Violation`] at `pointer` saying what is wrong.
pub fn validate_action(action: &str, pointer: &str) -> Result<(), Violation> {
    if action.is_empty() {
        return Err(Violation::new(pointer, "action must not be empty"));
    }
    if action.len() > MAX_ACTION_LEN {
        return Err(Violation::new(
            pointer,
            format!("action must be at most {MAX_ACTION_LEN} bytes"),
        ));
    }
    if action == "." || action == ".." {
        return Err(Violation::new(
            pointer,
            format!("action must not be {action:?} (it cannot be named in a URL path)"),
        ));
    }
    if let Some(c) = action
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    {
        return Err(Violation::new(
            pointer,
            format!("action may contain only letters, digits, '-', '_', '.', '/' (found {c:?})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_and_refuses_others() {
        assert!(validate_action("create-customer", "/action").is_ok());
        assert!(validate_action("billing/pay.v2_x", "/action").is_ok());
        assert!(validate_action("", "/action").is_err());
        assert!(validate_action("has space", "/action").is_err());
        assert!(validate_action(&"a".repeat(201), "/action").is_err());
        assert!(validate_action(".", "/action").is_err());
        assert!(validate_action("..", "/action").is_err());
        assert!(validate_action("...", "/action").is_ok());
        assert!(validate_action("./x", "/action").is_ok());
    }
}
