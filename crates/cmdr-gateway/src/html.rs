//! HTML rendering of API resources for browsers: the JSON document, escaped
//! and indented, with every link (a string starting with `/`) clickable, and
//! a navigation bar. Read-only; JSON stays the API.

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

fn render_value(v: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in m.iter().enumerate() {
                out.push_str(&pad);
                out.push_str(&format!("<span class=k>\"{}\"</span>: ", escape(k)));
                render_value(v, indent + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            out.push_str(&end);
            out.push('}');
        }
        Value::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, v) in a.iter().enumerate() {
                out.push_str(&pad);
                render_value(v, indent + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&end);
            out.push(']');
        }
        Value::String(s) if s.starts_with('/') => {
            out.push_str(&format!("\"<a href=\"{0}\">{0}</a>\"", escape(s)));
        }
        other => out.push_str(&escape(&other.to_string())),
    }
}

/// A whole page showing `body`.
pub fn page(title: &str, body: &Value) -> String {
    let mut doc = String::new();
    render_value(body, 0, &mut doc);
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
