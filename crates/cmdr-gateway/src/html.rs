//! HTML rendering of API resources for browsers: the JSON document, escaped
//! and indented, with the server's own links clickable (the paths in a
//! resource's `links` object and a listing's `next`, where a resource is the
//! document or an item of its `items` or `events`; never a string inside a
//! client's data, which could point anywhere), and a navigation bar.
//! Read-only; JSON stays the API.

use serde_json::Value;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, &mut out);
    out
}

/// Whether `s` is a path on this server: `/` then not a second `/` or a `\`
/// (which browsers read as another host).
fn is_local_path(s: &str) -> bool {
    s.starts_with('/') && !s[1..].starts_with(['/', '\\'])
}

/// Where a value sits in a document, for telling the server's links from
/// data (see the module).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A resource: the document, or an item of its `items` or `events`.
    Resource,
    /// The `items` or `events` array of a resource.
    Resources,
    /// A resource's `links` object, or a listing's `next`.
    Link,
    /// Anything else (data, meta, schemas...).
    Other,
}

impl Place {
    /// The place of the value under `key` of an object at `self`.
    fn of_field(self, key: &str) -> Place {
        match (self, key) {
            (Place::Resource, "links" | "next") => Place::Link,
            (Place::Resource, "items" | "events") => Place::Resources,
            (Place::Link, _) => Place::Link,
            _ => Place::Other,
        }
    }
}

/// Most bytes of HTML a page's document is rendered to; the rest is cut,
/// with a note. Indentation makes HTML larger than its JSON (deeply nested
/// data the most): without a limit, a 1 MB command of a few hundred
/// thousand values nested a hundred deep rendered to 88 MB.
pub const MAX_HTML_BYTES: usize = 8 * 1024 * 1024;

/// Nesting depth past which lines are indented no further.
const MAX_INDENT: usize = 16;

/// Renders a document into `out`, up to [`MAX_HTML_BYTES`].
struct Renderer {
    out: String,
    limit: usize,
    cut: bool,
}

impl Renderer {
    fn newline(&mut self, depth: usize) {
        self.out.push('\n');
        for _ in 0..depth.min(MAX_INDENT) {
            self.out.push_str("  ");
        }
    }

    /// Renders `v`, which sits at `place`, `depth` levels deep; stops once
    /// the output passes the limit.
    fn value(&mut self, v: &Value, place: Place, depth: usize) {
        if self.out.len() > self.limit {
            self.cut = true;
            return;
        }
        match v {
            Value::Object(m) if !m.is_empty() => {
                self.out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if self.cut {
                        return;
                    }
                    self.newline(depth + 1);
                    self.out.push_str("<span class=k>\"");
                    escape_into(k, &mut self.out);
                    self.out.push_str("\"</span>: ");
                    self.value(v, place.of_field(k), depth + 1);
                    if i + 1 < m.len() {
                        self.out.push(',');
                    }
                }
                self.newline(depth);
                self.out.push('}');
            }
            Value::Array(a) if !a.is_empty() => {
                self.out.push('[');
                let item = if place == Place::Resources {
                    Place::Resource
                } else {
                    Place::Other
                };
                for (i, v) in a.iter().enumerate() {
                    if self.cut {
                        return;
                    }
                    self.newline(depth + 1);
                    self.value(v, item, depth + 1);
                    if i + 1 < a.len() {
                        self.out.push(',');
                    }
                }
                self.newline(depth);
                self.out.push(']');
            }
            Value::String(s) if place == Place::Link && is_local_path(s) => {
                let s = escape(s);
                self.out.push_str("\"<a href=\"");
                self.out.push_str(&s);
                self.out.push_str("\">");
                self.out.push_str(&s);
                self.out.push_str("</a>\"");
            }
            other => escape_into(&other.to_string(), &mut self.out),
        }
    }
}

/// Appends `s`, escaped for HTML, to `out`.
fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The `Content-Security-Policy` of every HTML page: nothing loaded (the
/// pages are self-contained, with inline styles and no scripts), forms
/// posted only to this server, and no framing by any site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `res` is an HTML page.
pub(crate) fn is_html(res: &axum::response::Response) -> bool {
    res.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
}

/// Adds the headers every HTML page carries: [`CONTENT_SECURITY_POLICY`],
/// `X-Frame-Options: DENY` (for browsers without `frame-ancestors`),
/// `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
pub(crate) fn secure_headers(headers: &mut axum::http::HeaderMap) {
    use axum::http::{header, HeaderValue};
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A whole page showing `body` (its document cut past [`MAX_HTML_BYTES`]).
pub fn page(title: &str, body: &Value) -> String {
    page_within(title, body, MAX_HTML_BYTES)
}

/// [`page`] with the document cut past `limit` bytes.
fn page_within(title: &str, body: &Value, limit: usize) -> String {
    let t = escape(title);
    let mut head = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{t} · cmdr</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}nav a{{margin-right:1em}}\
pre{{background:#f6f8fa;padding:1em;overflow:auto}}.k{{color:#005cc5}}</style></head><body>\
<nav><a href=\"/\">cmdr</a><a href=\"/commands\">commands</a><a href=\"/events\">events</a>\
<a href=\"/schemas\">schemas</a><a href=\"/processors\">processors</a><a href=\"/dead-letters\">dead letters</a><a href=\"/docs\">API docs</a><a href=\"/openapi.json\">OpenAPI</a></nav>\
<h1>{t}</h1><pre>"
    );
    let start = head.len();
    let mut r = Renderer {
        out: std::mem::take(&mut head),
        limit: start + limit,
        cut: false,
    };
    r.value(body, Place::Resource, 0);
    let mut out = r.out;
    out.push_str("</pre>");
    if r.cut {
        out.push_str(
            "<p><strong>Cut here:</strong> this document is too large to show whole as HTML. \
Ask for it with <code>Accept: application/json</code> to read all of it.</p>",
        );
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::{page, page_within};
    use serde_json::json;

    /// Deep, wide data renders to at most the limit (and a note), not to
    /// indentation times values; a small document renders whole, indented.
    #[test]
    fn a_page_is_cut_past_its_byte_limit() {
        let mut deep = json!(vec![""; 20_000]);
        for _ in 0..120 {
            deep = json!([deep]);
        }
        let doc = json!({"id": "c1", "data": {"deep": deep}});
        let json_len = doc.to_string().len();
        let html = page_within("t", &doc, 64 * 1024);
        assert!(html.len() < 80 * 1024, "{} bytes of HTML", html.len());
        assert!(html.contains("Cut here"));
        assert!(html.ends_with("</body></html>"));
        let whole = page("t", &doc);
        assert!(!whole.contains("Cut here"));
        // Indentation stops deepening past MAX_INDENT levels.
        assert!(whole.len() < 16 * json_len, "{} vs {json_len}", whole.len());

        let small = page("t", &json!({"a": {"b": [1, 2]}}));
        let expected = "<pre>{\n  <span class=k>\"a\"</span>: {\n    \
<span class=k>\"b\"</span>: [\n      1,\n      2\n    ]\n  }\n}</pre>";
        assert!(small.contains(expected), "{small}");
        assert!(!small.contains("Cut here"));
    }

    #[test]
    fn only_the_servers_own_paths_are_links() {
        let doc = json!({
            "id": "c1",
            "data": {"home": "/commands", "evil": "//evil.example/x", "links": {"self": "/x"}},
            "key": "/\\evil.example",
            "links": {"self": "/commands/c1", "far": "//evil.example", "slash": "/\\evil.example"},
            "events": [{"data": {"to": "/y"}, "links": {"self": "/events/e1"}}],
            "next": "/commands?after=c1",
        });
        let html = page("t", &doc);
        let links: Vec<&str> = html
            .split("<a href=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        // The navigation bar's, then the document's own.
        let own: Vec<&str> = links
            .into_iter()
            .filter(|l| !l.starts_with("/docs"))
            .collect();
        assert!(own.contains(&"/commands/c1"), "{own:?}");
        assert!(own.contains(&"/events/e1"), "{own:?}");
        assert!(own.contains(&"/commands?after=c1"), "{own:?}");
        for never in [
            "//evil.example/x",
            "//evil.example",
            "/\\evil.example",
            "/x",
            "/y",
        ] {
            assert!(!own.contains(&never), "{never} linked: {own:?}");
        }
    }
}
