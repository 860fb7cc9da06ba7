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
//! [`MAX_EXPANDED_NODES`] is refused. Under an object with
//! `unevaluatedProperties` or `unevaluatedItems`, its in-place subschemas
//! (`allOf`, `$ref`, ...) count [`UNEVALUATED_FACTOR`] times, since the
//! validator evaluates them again for it.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Most nodes a schema may expand to through its references.
pub(crate) const MAX_EXPANDED_NODES: u64 = 1_000_000;

/// How many times an object with `unevaluatedProperties` or
/// `unevaluatedItems` counts its in-place subschemas ([`IN_PLACE`]): the
/// validator evaluates them again to learn what they evaluated, so each
/// such keyword nested in another's `allOf` multiplies the work (twenty
/// nested took 4.7 s for one command of one member, about 2.6 times more
/// per level). Subschemas of `properties` and the like apply to other
/// instance nodes, and are counted once.
const UNEVALUATED_FACTOR: u64 = 4;

/// Keywords whose subschemas `unevaluated*` evaluates again: those that
/// apply to the same instance node as their object, and those that decide
/// which members or items count as evaluated (`contains` is evaluated
/// again on every item: nested under `unevaluatedItems` it doubled the
/// work per level). Not `properties`, whose members are known by name.
const IN_PLACE: [&str; 16] = [
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "$ref",
    "$dynamicRef",
    "contains",
    "items",
    "prefixItems",
    "additionalProperties",
    "patternProperties",
    "propertyNames",
];

/// Deepest chain of nesting and references followed while measuring.
const MAX_DEPTH: usize = 1_024;

/// Why `schema` would make validation too costly (or could not be measured),
/// if so.
#[cfg(test)]
pub(crate) fn too_costly(schema: &Value) -> Option<String> {
    expanded_nodes(schema).err()
}

/// The nodes `schema` expands to through its references (a bound on the
/// work, and on the errors, of validating one instance node against it);
/// why it is refused, if it is too costly or cannot be measured.
pub(crate) fn expanded_nodes(schema: &Value) -> Result<u64, String> {
    let mut walker = Walker {
        root: schema,
        resources: HashMap::new(),
        anchors: HashMap::new(),
        resource_of: HashMap::new(),
        sizes: HashMap::new(),
        open: HashSet::new(),
    };
    walker.index(schema, schema, 0);
    match walker.size(schema, 0) {
        Ok((n, _)) if n <= MAX_EXPANDED_NODES => Ok(n),
        Ok(_) => Err(format!(
            "the schema expands, through its $refs, to more than {MAX_EXPANDED_NODES} nodes: \
             validating a command against it would take too long"
        )),
        Err(why) => Err(why),
    }
}

struct Walker<'a> {
    root: &'a Value,
    /// Schema resources by their `$id`, as written.
    resources: HashMap<&'a str, &'a Value>,
    /// `$anchor` and `$dynamicAnchor` targets, by (resource, name).
    anchors: HashMap<(usize, &'a str), &'a Value>,
    /// The resource (nearest `$id`, else the root) of each object, by address.
    resource_of: HashMap<usize, &'a Value>,
    /// Expanded size of each node measured, by address (only sizes that
    /// did not meet an open node: those depend on the way in).
    sizes: HashMap<usize, u64>,
    /// Nodes being measured: a reference to one of them is recursion.
    open: HashSet<usize>,
}

/// A node's address: its identity while the document is borrowed.
fn addr(v: &Value) -> usize {
    v as *const Value as usize
}

impl<'a> Walker<'a> {
    /// Records resources, anchors and each object's resource.
    fn index(&mut self, v: &'a Value, resource: &'a Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::Object(map) => {
                let resource = match map.get("$id") {
                    Some(Value::String(id)) => {
                        self.resources.insert(id.trim_end_matches('#'), v);
                        v
                    }
                    _ => resource,
                };
                self.resource_of.insert(addr(v), resource);
                for key in ["$anchor", "$dynamicAnchor"] {
                    if let Some(Value::String(name)) = map.get(key) {
                        self.anchors.insert((addr(resource), name), v);
                    }
                }
                for child in map.values() {
                    self.index(child, resource, depth + 1);
                }
            }
            Value::Array(items) => {
                for child in items {
                    self.index(child, resource, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// What `reference`, written in object `at`, points to.
    fn resolve(&self, reference: &str, at: &'a Value) -> Result<&'a Value, String> {
        let (uri, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let resource = if uri.is_empty() {
            self.resource_of
                .get(&addr(at))
                .copied()
                .unwrap_or(self.root)
        } else {
            self.resources.get(uri).copied().ok_or_else(|| {
                format!(
                    "$ref {reference:?} names no $id of this schema as written \
                     (the schema's cost cannot be checked)"
                )
            })?
        };
        let target = if fragment.is_empty() {
            Some(resource)
        } else if fragment.starts_with('/') {
            resource.pointer(&percent_encoding::percent_decode_str(fragment).decode_utf8_lossy())
        } else {
            self.anchors.get(&(addr(resource), fragment)).copied()
        };
        target.ok_or_else(|| {
            format!("$ref {reference:?} points nowhere in this schema (its cost cannot be checked)")
        })
    }

    /// Nodes `v` expands to, and whether that met a node being measured.
    fn size(&mut self, v: &'a Value, depth: usize) -> Result<(u64, bool), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "the schema nests and refers more than {MAX_DEPTH} levels deep"
            ));
        }
        let at = addr(v);
        if let Some(&n) = self.sizes.get(&at) {
            return Ok((n, false));
        }
        if !self.open.insert(at) {
            return Ok((1, true));
        }
        let (mut n, mut met_open) = (1u64, false);
        let unevaluated = v.as_object().is_some_and(|map| {
            map.contains_key("unevaluatedProperties") || map.contains_key("unevaluatedItems")
        });
        let children: Vec<(Option<&str>, &'a Value)> = match v {
            Value::Object(map) => map.iter().map(|(k, c)| (Some(k.as_str()), c)).collect(),
            Value::Array(items) => items.iter().map(|c| (None, c)).collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            let target = match (key, child) {
                (Some("$ref" | "$dynamicRef"), Value::String(r)) => self.resolve(r, v)?,
                _ => child,
            };
            let (mut size, open) = self.size(target, depth + 1)?;
            if unevaluated && key.is_some_and(|k| IN_PLACE.contains(&k)) {
                size = size.saturating_mul(UNEVALUATED_FACTOR);
            }
            n = n.saturating_add(size);
            met_open |= open;
            if n > MAX_EXPANDED_NODES {
                break;
            }
        }
        self.open.remove(&at);
        if !met_open {
            self.sizes.insert(at, n);
        }
        Ok((n, met_open))
    }
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
    fn nested_unevaluated_keywords_multiply_the_cost() {
        let nest = |levels: usize| {
            let mut s = json!({"type": "object", "properties": {"a": true}});
            for _ in 0..levels {
                s = json!({"allOf": [s], "unevaluatedProperties": false});
            }
            s
        };
        assert_eq!(too_costly(&nest(3)), None);
        let why = too_costly(&nest(20)).expect("refused");
        assert!(why.contains("more than 1000000 nodes"), "{why}");
        // `contains` under `unevaluatedItems` is evaluated again on every
        // item: refused nested, as the validator's work doubles per level.
        let mut contains = json!(true);
        for _ in 0..26 {
            contains = json!({"contains": contains, "unevaluatedItems": false});
        }
        assert!(too_costly(&json!({"properties": {"a": contains}})).is_some());
        // Strict objects nested through `properties` are ordinary: each
        // level checks another instance node, and costs once.
        let mut strict =
            json!({"type": "object", "properties": {"a": true}, "unevaluatedProperties": false});
        for _ in 0..30 {
            strict = json!({"type": "object", "properties": {"a": strict}, "unevaluatedProperties": false});
        }
        assert_eq!(too_costly(&strict), None);
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

    /// The doubling chain behind an `$id` of the root, or of an embedded
    /// resource.
    #[test]
    fn references_through_ids_are_followed() {
        let mut defs = serde_json::Map::new();
        defs.insert("a0".into(), json!({"type": "object"}));
        for n in 1..=40 {
            let prev = format!("urn:r#/$defs/a{}", n - 1);
            defs.insert(
                format!("a{n}"),
                json!({"allOf": [{"$ref": prev}, {"$ref": prev}]}),
            );
        }
        let schema = json!({"$id": "urn:r", "$defs": defs, "$ref": "urn:r#/$defs/a40"});
        assert!(too_costly(&schema).is_some());
        let inner = doubling(40);
        let mut embedded = inner.clone();
        embedded["$id"] = json!("urn:inner");
        let schema = json!({"$defs": {"inner": embedded}, "$ref": "urn:inner"});
        assert!(too_costly(&schema).is_some());
    }

    #[test]
    fn a_reference_that_cannot_be_followed_is_refused() {
        let why = too_costly(&json!({"$ref": "other.json#/x"})).expect("refused");
        assert!(why.contains("names no $id"), "{why}");
    }

    /// Recursion met on one way in must not make a node look cheap on
    /// another.
    #[test]
    fn sizes_cut_by_recursion_are_not_reused() {
        let mut defs = serde_json::Map::new();
        defs.insert(
            "x".into(),
            json!({"allOf": [{"$ref": "#/$defs/b14"}, {"$ref": "#/$defs/y"}]}),
        );
        defs.insert(
            "y".into(),
            json!({"properties": {"p": {"$ref": "#/$defs/x"}}}),
        );
        defs.insert("b0".into(), json!({"type": "object"}));
        defs.insert("z0".into(), json!({"$ref": "#/$defs/y"}));
        for n in 1..=14 {
            let (b, z) = (format!("#/$defs/b{}", n - 1), format!("#/$defs/z{}", n - 1));
            defs.insert(
                format!("b{n}"),
                json!({"allOf": [{"$ref": b}, {"$ref": b}]}),
            );
            defs.insert(
                format!("z{n}"),
                json!({"allOf": [{"$ref": z}, {"$ref": z}]}),
            );
        }
        let schema = json!({"$defs": defs, "$ref": "#/$defs/z14"});
        assert!(too_costly(&schema).is_some());
    }
}
