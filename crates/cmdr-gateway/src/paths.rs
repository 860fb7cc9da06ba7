//! Names (keys, actions, ids) placed in the server's links.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters of a name left as they are in a link: the unreserved ones.
/// Everything else is percent-encoded, `/` included: a key like `a/../b`
/// left with its slashes would be read by browsers and curl as the path
/// `/b` (dot segments are removed), another resource.
const SEGMENT_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` percent-encoded as one path segment (`a/b?c` → `a%2Fb%3Fc`); the
/// routes taking a name (`/streams/{key}`, `/schemas/{action}`) decode it.
pub fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT_KEEP).to_string()
}

/// The path of one key's stream, the key percent-encoded (`a/b` →
/// `/streams/a%2Fb`); in the query for `.` and `..`, which no path segment
/// can carry (clients resolve them, `%2E` included, as dot segments).
pub fn stream(key: &str) -> String {
    if key == "." || key == ".." {
        let qs = serde_urlencoded::to_string([("key", key)]).unwrap_or_default();
        return format!("/streams?{qs}");
    }
    format!("/streams/{}", segment(key))
}

#[cfg(test)]
mod tests {
    use super::{segment, stream};

    #[test]
    fn slashes_and_reserved_characters_are_encoded() {
        assert_eq!(segment("a/../b"), "a%2F..%2Fb");
        assert_eq!(segment("acc-1_x.y~z"), "acc-1_x.y~z");
        assert_eq!(segment("a?b#c d%"), "a%3Fb%23c%20d%25");
        assert_eq!(segment("ü"), "%C3%BC");
    }

    #[test]
    fn stream_paths_encode_what_would_break_the_link() {
        assert_eq!(stream("acc-1"), "/streams/acc-1");
        assert_eq!(stream("a/b_c.d~e"), "/streams/a%2Fb_c.d~e");
        assert_eq!(stream("a/../b"), "/streams/a%2F..%2Fb");
        assert_eq!(stream("a?b#c d%e"), "/streams/a%3Fb%23c%20d%25e");
        assert_eq!(stream("ü"), "/streams/%C3%BC");
        assert_eq!(stream("."), "/streams?key=.");
        assert_eq!(stream(".."), "/streams?key=..");
        assert_eq!(stream("..."), "/streams/...");
    }
}
