//! A small JSON Schema checker for the subset `crates/load/src/report.schema.json` uses: `type`
//! (incl. `integer` and type lists), `enum`, `minimum`, `properties`, `required`,
//! `additionalProperties` (bool or schema), `items`, and local `$ref` into `$defs`.
//!
//! Why not the `jsonschema` crate: even with default features off it pulls in a regex engine,
//! URL and email parsers and more, several dozen crates to compile on a shared 2-core machine
//! for one test, while this subset takes a page and is itself tested below.

use serde_json::Value;

/// Checks `value` against `schema` (whose `$defs` resolve `$ref`s); returns every violation.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "$", &mut errors);
    errors
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_u64() || v.is_i64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("schema uses a type this checker does not know: {other}"),
    }
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    const KNOWN: [&str; 13] = [
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "title",
        "description",
        "type",
        "enum",
        "minimum",
        "properties",
        "required",
        "additionalProperties",
        "items",
    ];
    let obj = schema.as_object().expect("a schema is an object");
    for key in obj.keys() {
        assert!(
            KNOWN.contains(&key.as_str()),
            "schema keyword {key} not supported by this checker"
        );
    }
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("only local $defs refs");
        check(root, &root["$defs"][name], v, path, errors);
    }
    if let Some(t) = obj.get("type") {
        let names: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type keyword"),
        };
        if !names.iter().any(|n| type_matches(n, v)) {
            errors.push(format!("{path}: expected {names:?}, got {v}"));
            return;
        }
    }
    if let Some(options) = obj.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        errors.push(format!("{path}: {v} not one of {options:?}"));
    }
    if let (Some(min), Some(x)) = (obj.get("minimum").and_then(Value::as_f64), v.as_f64())
        && x < min
    {
        errors.push(format!("{path}: {x} is below the minimum {min}"));
    }
    if let Some(map) = v.as_object() {
        let props = obj.get("properties").and_then(Value::as_object);
        for req in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().expect("required names are strings");
            if !map.contains_key(req) {
                errors.push(format!("{path}: missing required {req}"));
            }
        }
        for (key, item) in map {
            let sub = format!("{path}.{key}");
            match (
                props.and_then(|p| p.get(key)),
                obj.get("additionalProperties"),
            ) {
                (Some(s), _) => check(root, s, item, &sub, errors),
                (None, Some(Value::Bool(false))) => errors.push(format!("{sub}: not allowed")),
                (None, Some(s @ Value::Object(_))) => check(root, s, item, &sub, errors),
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (obj.get("items"), v.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(root, items, item, &format!("{path}[{i}]"), errors);
        }
    }
}

#[test]
fn checker_catches_violations() {
    let schema: Value = serde_json::json!({
        "type": "object", "additionalProperties": false, "required": ["a", "b"],
        "properties": {
            "a": {"type": "integer", "minimum": 1},
            "b": {"type": "array", "items": {"$ref": "#/$defs/s"}}
        },
        "$defs": {"s": {"type": ["string", "null"], "enum": ["x", null]}}
    });
    assert!(validate(&schema, &serde_json::json!({"a": 2, "b": ["x", null]})).is_empty());
    let bad = serde_json::json!({"a": 0.5, "b": ["y", 3], "c": 1});
    let errors = validate(&schema, &bad);
    assert_eq!(errors.len(), 4, "{errors:#?}"); // a not integer, b[0] enum, b[1] type, c extra
    assert_eq!(
        validate(&schema, &serde_json::json!({"a": 0, "b": []})).len(),
        1
    );
    assert_eq!(validate(&schema, &serde_json::json!({"b": []})).len(), 1);
}
