//! A bound on the work a registered JSON Schema can make each validation do.
//!
//! A small schema can describe an enormous one: `a1 = {"allOf": [{"$ref":
//! "#/$defs/a0"}, {"$ref": "#/$defs/a0"}]}`, `a2` the same over `a1`, and
//! so on, doubles the validator's work at each level; forty levels (2.5 KB)
//! would keep a worker busy for days on every command of the action, and
//! its error list would fill memory. So a schema is measured before it is
//! compiled: every JSON node counts once for each way it can be reached,
//! `$ref` and `$dynamicRef` followed (JSON pointers into the document,
//! `$anchor`/`$dynamicAnchor` names and `$id`s), a reference back into
//! itself (recursion, bounded by the instance) counted once. A schema over
//! [`MAX_EXPANDED_NODES`] is refused.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Most nodes a schema may expand to through its references.
pub(crate) const MAX_EXPANDED_NODES: u64 = 1_000_000;

/// Deepest chain of nesting and references followed while measuring.
const MAX_DEPTH: usize = 1_024;

/// Why `schema` would make validation too costly, if it would.
pub(crate) fn too_costly(schema: &Value) -> Option<String> {
    let mut walker = Walker {
        root: schema,
        names: HashMap::new(),
        sizes: HashMap::new(),
        open: HashSet::new(),
    };
    walker.collect_names(schema, 0);
    match walker.size(schema, 0) {
        Some(n) if n <= MAX_EXPANDED_NODES => None,
        Some(_) => Some(format!(
            "the schema expands, through its $refs, to more than {MAX_EXPANDED_NODES} nodes: \
             validating a command against it would take too long"
        )),
        None => Some(format!(
            "the schema nests and refers more than {MAX_DEPTH} levels deep"
        )),
    }
}

struct Walker<'a> {
    root: &'a Value,
    /// `$anchor`, `$dynamicAnchor` (as `#name`) and `$id` targets.
    names: HashMap<String, &'a Value>,
    /// Expanded size of each node measured, by address.
    sizes: HashMap<usize, u64>,
    /// Nodes being measured: a reference to one of them is recursion.
    open: HashSet<usize>,
}

impl<'a> Walker<'a> {
    fn collect_names(&mut self, v: &'a Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::Object(map) => {
                for key in ["$anchor", "$dynamicAnchor"] {
                    if let Some(Value::String(name)) = map.get(key) {
                        self.names.insert(format!("#{name}"), v);
                    }
                }
                if let Some(Value::String(id)) = map.get("$id") {
                    self.names.insert(id.clone(), v);
                }
                for child in map.values() {
                    self.collect_names(child, depth + 1);
                }
            }
            Value::Array(items) => {
                for child in items {
                    self.collect_names(child, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// What `reference` points to, when it is in this document.
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        if let Some(target) = self.names.get(reference) {
            return Some(target);
        }
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        let decoded = percent_decode(pointer);
        self.root.pointer(&decoded)
    }

    /// Nodes `v` expands to, or `None` past [`MAX_DEPTH`].
    fn size(&mut self, v: &'a Value, depth: usize) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        let at = v as *const Value as usize;
        if let Some(&n) = self.sizes.get(&at) {
            return Some(n);
        }
        if !self.open.insert(at) {
            return Some(1);
        }
        let mut n: u64 = 1;
        let children: Vec<(Option<&str>, &'a Value)> = match v {
            Value::Object(map) => map.iter().map(|(k, c)| (Some(k.as_str()), c)).collect(),
            Value::Array(items) => items.iter().map(|c| (None, c)).collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            let reference = match (key, child) {
                (Some("$ref" | "$dynamicRef"), Value::String(r)) => Some(r.as_str()),
                _ => None,
            };
            let target = match reference {
                Some(r) => self.resolve(r),
                None => Some(child),
            };
            if let Some(target) = target {
                n = n.saturating_add(self.size(target, depth + 1)?);
            }
            if n > MAX_EXPANDED_NODES {
                break;
            }
        }
        self.open.remove(&at);
        self.sizes.insert(at, n);
        Some(n)
    }
}

/// `%XX` escapes decoded (a JSON pointer in a URI fragment may use them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `a0` a leaf, each `aN` two references to `a(N-1)`.
    fn doubling(levels: usize) -> Value {
        let mut defs = serde_json::Map::new();
        defs.insert("a0".into(), json!({"type": "object"}));
        for n in 1..=levels {
            let prev = format!("#/$defs/a{}", n - 1);
            defs.insert(
                format!("a{n}"),
                json!({"allOf": [{"$ref": prev}, {"$ref": prev}]}),
            );
        }
        json!({"$defs": defs, "$ref": format!("#/$defs/a{levels}")})
    }

    #[test]
    fn ordinary_schemas_pass() {
        let schema = json!({
            "type": "object",
            "required": ["amount"],
            "properties": {
                "amount": {"type": "integer", "minimum": 1},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
                "tree": {"$ref": "#"},
            },
            "$defs": {"tag": {"type": "string", "maxLength": 20}},
        });
        assert_eq!(too_costly(&schema), None);
        assert_eq!(too_costly(&doubling(8)), None);
    }

    #[test]
    fn a_schema_that_doubles_at_each_level_is_refused() {
        let why = too_costly(&doubling(40)).expect("refused");
        assert!(why.contains("more than 1000000 nodes"), "{why}");
    }

    #[test]
    fn anchors_and_escaped_pointers_are_followed() {
        let mut defs = serde_json::Map::new();
        defs.insert("a 0".into(), json!({"$anchor": "leaf0", "type": "object"}));
        for n in 1..=40 {
            defs.insert(
                format!("a {n}"),
                json!({"$anchor": format!("leaf{n}"),
                       "anyOf": [{"$ref": format!("#leaf{}", n - 1)},
                                 {"$ref": format!("#/$defs/a%20{}", n - 1)}]}),
            );
        }
        let schema = json!({"$defs": defs, "$ref": "#leaf40"});
        assert!(too_costly(&schema).is_some());
    }

    #[test]
    fn endless_reference_chains_are_refused() {
        let mut defs = serde_json::Map::new();
        for n in 0..2_000 {
            defs.insert(
                format!("d{n}"),
                json!({"$ref": format!("#/$defs/d{}", n + 1)}),
            );
        }
        let schema = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        let why = too_costly(&schema).expect("refused");
        assert!(why.contains("levels deep"), "{why}");
    }
}
