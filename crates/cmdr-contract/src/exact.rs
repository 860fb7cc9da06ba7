//! Whether JSON text means exactly what its parsed value holds, so that an
//! acknowledged command is the one that was sent:
//!
//! - no member is given twice in one object (a parser keeps one of them, and
//!   which one depends on the parser: a proxy that reads the first would act
//!   on another command than the one cmdr stores);
//! - no number is beyond what a 64-bit integer or double holds (it would be
//!   stored rounded: `18446744073709551617` as `1.8446744073709552e19`, a
//!   non-zero `1e-400` as `0`). Decimals with more digits than a double keeps
//!   are rounded as every JSON parser that reads doubles rounds them.
//!
//! One pass over the text with an explicit stack (no recursion); the
//! pointer to the offending member is built only when there is one.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::command::escape_pointer;
use crate::Violation;

/// Members of one object compared one by one; past this, through a set.
const LINEAR_KEYS: usize = 16;

/// An open object or array.
enum Frame<'a> {
    Object {
        /// Where this object's member names start in the names of the open
        /// objects.
        first_key: usize,
        /// The member being read: its name's place there.
        current: Option<usize>,
        /// Its member names once it has more than [`LINEAR_KEYS`].
        set: Option<HashSet<Cow<'a, [u8]>>>,
    },
    Array {
        index: usize,
    },
}

/// Checks `json` (text that parses as JSON) as the module says; the first
/// problem, with a pointer to it.
///
/// # Errors
/// A [`Violation`] naming a member given twice or a number out of range.
pub fn check(json: &[u8]) -> Result<(), Violation> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    // Member names of the open objects, innermost last; the last of each
    // object is the member being read.
    let mut keys: Vec<Cow<'_, [u8]>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b'{' => {
                stack.push(Frame::Object {
                    first_key: keys.len(),
                    current: None,
                    set: None,
                });
                expect_key = true;
                i += 1;
            }
            b'[' => {
                stack.push(Frame::Array { index: 0 });
                i += 1;
            }
            b'}' | b']' => {
                if let Some(Frame::Object { first_key, .. }) = stack.pop() {
                    keys.truncate(first_key);
                }
                expect_key = false;
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object { .. }) => expect_key = true,
                    Some(Frame::Array { index }) => *index += 1,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(json, i);
                if expect_key {
                    expect_key = false;
                    let name = member_name(json.get(i + 1..end.saturating_sub(1)).unwrap_or(&[]));
                    if let Some(Frame::Object {
                        first_key,
                        current,
                        set,
                    }) = stack.last_mut()
                    {
                        let first_key = *first_key;
                        let duplicate = match set {
                            Some(set) => !set.insert(name.clone()),
                            None => keys.get(first_key..).is_some_and(|k| k.contains(&name)),
                        };
                        *current = Some(keys.len());
                        keys.push(name);
                        if duplicate {
                            return Err(Violation::new(
                                pointer(&stack, &keys),
                                "this member is given twice in its object",
                            ));
                        }
                        let count = keys.len() - first_key;
                        if set.is_none() && count > LINEAR_KEYS {
                            *set = Some(keys[first_key..].iter().cloned().collect());
                        }
                    }
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while json
                    .get(i)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&json[start..i]).unwrap_or("");
                if let Some(why) = number_problem(token) {
                    return Err(Violation::new(pointer(&stack, &keys), why));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index just past the string that starts with the quote at `start`.
fn string_end(json: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = json.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    json.len()
}

/// A member name as its text, unescaped when it holds escapes.
fn member_name(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    match serde_json::from_slice::<String>(&quoted) {
        Ok(s) => Cow::Owned(s.into_bytes()),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// Whether serde_json refused text only for a number past a double's
/// range: valid JSON, which [`check`] then locates (with its pointer), so
/// that it is refused as such numbers are, not as malformed text.
pub fn is_out_of_range(e: &serde_json::Error) -> bool {
    e.is_syntax() && e.to_string().starts_with("number out of range")
}

/// Why a number token would not be stored as sent, if so.
fn number_problem(token: &str) -> Option<String> {
    if !token.contains(['.', 'e', 'E']) {
        let fits = if token.starts_with('-') {
            token.parse::<i64>().is_ok()
        } else {
            token.parse::<u64>().is_ok()
        };
        return (!fits).then(|| {
            format!("the integer {token} does not fit in 64 bits (it would be rounded): send it as a string")
        });
    }
    let value: f64 = token.parse().ok()?;
    if value.is_infinite() {
        return Some(format!(
            "the number {token} is too large for a 64-bit double: send it as a string"
        ));
    }
    let mantissa = token.split(['e', 'E']).next().unwrap_or("");
    let nonzero = mantissa.bytes().any(|b| matches!(b, b'1'..=b'9'));
    if value == 0.0 && nonzero {
        return Some(format!(
            "the number {token} is too small for a 64-bit double (it would be stored as 0): send it as a string"
        ));
    }
    None
}

/// The JSON Pointer of the value being read.
fn pointer(stack: &[Frame<'_>], keys: &[Cow<'_, [u8]>]) -> String {
    let mut out = String::new();
    for frame in stack {
        out.push('/');
        match frame {
            Frame::Array { index } => out.push_str(&index.to_string()),
            Frame::Object { current, .. } => {
                let name = current
                    .and_then(|k| keys.get(k))
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                out.push_str(&escape_pointer(&name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::check;

    fn problem(json: &str) -> Option<(String, String)> {
        check(json.as_bytes()).err().map(|v| (v.pointer, v.message))
    }

    #[test]
    fn exact_json_passes() {
        for ok in [
            r#"{"action": "a", "data": {"n": [1, -2, 2.5, 1e300, 1E2, -0, 0.0, 0e-999, 18446744073709551615, -9223372036854775808]}}"#,
            r#"{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}"#,
            r#"{"s": "a \" } , { \\", "t": "1e-400"}"#,
            r#"[]"#,
            r#"{"x": 0.1000000000000000055511151231257827}"#,
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn members_given_twice_are_found_with_their_pointer() {
        let (p, m) = problem(r#"{"action": "a", "data": {"x": 1}, "action": "b"}"#).unwrap();
        assert_eq!(p, "/action");
        assert!(m.contains("twice"), "{m}");
        let (p, _) = problem(r#"{"data": {"list": [{"a": 1}, {"b": 1, "b": 2}]}}"#).unwrap();
        assert_eq!(p, "/data/list/1/b");
        // One name written two ways is one name.
        let (p, _) = problem(r#"{"data": {"a/b": 1, "a\/b": 2}}"#).unwrap();
        assert_eq!(p, "/data/a~1b");
        // Past the linear comparisons, through the set.
        let mut wide: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        wide.push("\"k7\": 0".into());
        let (p, _) = problem(&format!("{{\"data\": {{{}}}}}", wide.join(", "))).unwrap();
        assert_eq!(p, "/data/k7");
    }

    #[test]
    fn numbers_past_a_double_are_found_with_their_pointer() {
        let v = check(br#"{"data": {"big": [1, -1.5e400]}}"#).unwrap_err();
        assert_eq!(v.pointer, "/data/big/1");
        assert!(v.message.contains("too large"), "{}", v.message);
    }

    #[test]
    fn numbers_that_would_be_rounded_are_found_with_their_pointer() {
        let (p, m) = problem(r#"{"data": {"n": 18446744073709551617}}"#).unwrap();
        assert_eq!(p, "/data/n");
        assert!(m.contains("64 bits"), "{m}");
        let (p, _) = problem(r#"{"data": {"l": [1, -9223372036854775809]}}"#).unwrap();
        assert_eq!(p, "/data/l/1");
        let (p, m) = problem(r#"{"data": {"tiny": 1e-400}}"#).unwrap();
        assert_eq!(p, "/data/tiny");
        assert!(m.contains("too small"), "{m}");
    }
}
