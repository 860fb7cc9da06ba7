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

/// Renders `v`, which sits at `place`.
fn render_value(v: &Value, place: Place, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in m.iter().enumerate() {
                out.push_str(&pad);
                out.push_str(&format!("<span class=k>\"{}\"</span>: ", escape(k)));
                render_value(v, place.of_field(k), indent + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            out.push_str(&end);
            out.push('}');
        }
        Value::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, v) in a.iter().enumerate() {
                out.push_str(&pad);
                let item = if place == Place::Resources {
                    Place::Resource
                } else {
                    Place::Other
                };
                render_value(v, item, indent + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&end);
            out.push(']');
        }
        Value::String(s) if place == Place::Link && is_local_path(s) => {
            out.push_str(&format!("\"<a href=\"{0}\">{0}</a>\"", escape(s)));
        }
        other => out.push_str(&escape(&other.to_string())),
    }
}

/// A whole page showing `body`.
pub fn page(title: &str, body: &Value) -> String {
    let mut doc = String::new();
    render_value(body, Place::Resource, 0, &mut doc);
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{t} · cmdr</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}nav a{{margin-right:1em}}\
pre{{background:#f6f8fa;padding:1em;overflow:auto}}.k{{color:#005cc5}}</style></head><body>\
<nav><a href=\"/\">cmdr</a><a href=\"/commands\">commands</a><a href=\"/events\">events</a>\
<a href=\"/schemas\">schemas</a><a href=\"/processors\">processors</a><a href=\"/dead-letters\">dead letters</a><a href=\"/docs\">API docs</a><a href=\"/openapi.json\">OpenAPI</a></nav>\
<h1>{t}</h1><pre>{doc}</pre></body></html>",
        t = escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::page;
    use serde_json::json;

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
