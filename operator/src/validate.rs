//! Checks a manifest against a generated CRD's `openAPIV3Schema` the way the apiserver does
//! for what our CRDs use: defaults applied first, then types, required and unknown fields
//! (strict field validation), enums, numeric ranges, lengths and item counts, and every
//! `x-kubernetes-validations` CEL rule through its Rust twin in [`crate::crd::CEL_RULES`].
//! A schema keyword it does not know is an error, so a constraint is never skipped silently.

use serde_json::{Map, Value};

use crate::crd::CEL_RULES;

/// Validates `object` (a whole manifest: apiVersion, kind, metadata, spec) against the first
/// version's schema of `crd`. Returns every violation, each prefixed by its JSON path.
pub fn validate(crd: &Value, object: &Value) -> Result<(), Vec<String>> {
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    if !schema.is_object() {
        return Err(vec!["the CRD has no openAPIV3Schema".into()]);
    }
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let version = crd["spec"]["versions"][0]["name"].as_str().unwrap_or_default();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    let mut errors = Vec::new();
    if object["apiVersion"].as_str() != Some(&format!("{group}/{version}")) || object["kind"].as_str() != Some(kind) {
        errors.push(format!("not a {kind} of {group}/{version}"));
    }
    if object["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        errors.push("metadata.name is required".into());
    }
    let mut object = object.clone();
    check(schema, &mut object, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "description",
    "default",
    "enum",
    "nullable",
    "format",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "title",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
];

fn check(schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        errors.push(format!("{path}: schema node is not an object"));
        return;
    };
    if let Some(k) = s.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        errors.push(format!("{path}: schema keyword {k:?} is not supported by this checker"));
        return;
    }
    let at = |p: &str| {
        if p.is_empty() {
            "<root>".to_string()
        } else {
            p.to_string()
        }
    };
    if value.is_null() {
        if s.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{}: must not be null", at(path)));
        }
        return;
    }
    let ty = s.get("type").and_then(Value::as_str);
    match (ty, &mut *value) {
        (Some("object"), Value::Object(map)) => check_object(s, map, path, errors),
        (Some("array"), Value::Array(items)) => {
            let n = items.len() as u64;
            if s.get("minItems").and_then(Value::as_u64).is_some_and(|m| n < m) {
                errors.push(format!("{}: needs at least {} items", at(path), s["minItems"]));
            }
            if s.get("maxItems").and_then(Value::as_u64).is_some_and(|m| n > m) {
                errors.push(format!("{}: at most {} items", at(path), s["maxItems"]));
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
            // A list-map holds at most one item per key (as server-side apply merges it).
            if s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let keys: Vec<&str> = s["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut seen = std::collections::HashSet::new();
                for item in items.iter() {
                    let key: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
                    if !seen.insert(key.clone()) {
                        errors.push(format!("{}: duplicate entry with key {}", at(path), key.join(",")));
                    }
                }
            }
        }
        (Some("string"), Value::String(text)) => {
            let n = text.chars().count() as u64;
            if s.get("minLength").and_then(Value::as_u64).is_some_and(|m| n < m) {
                errors.push(format!("{}: shorter than {}", at(path), s["minLength"]));
            }
            if s.get("maxLength").and_then(Value::as_u64).is_some_and(|m| n > m) {
                errors.push(format!("{}: longer than {}", at(path), s["maxLength"]));
            }
        }
        (Some("integer"), Value::Number(num)) if num.is_i64() || num.is_u64() => {
            let v = num.as_f64().unwrap_or_default();
            if s.get("minimum").and_then(Value::as_f64).is_some_and(|m| v < m) {
                errors.push(format!("{}: below the minimum {}", at(path), s["minimum"]));
            }
            if s.get("maximum").and_then(Value::as_f64).is_some_and(|m| v > m) {
                errors.push(format!("{}: above the maximum {}", at(path), s["maximum"]));
            }
        }
        (Some("number"), Value::Number(_)) | (Some("boolean"), Value::Bool(_)) => {}
        (None, _) if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) => {}
        (ty, v) => {
            errors.push(format!(
                "{}: expected {}, found {}",
                at(path),
                ty.unwrap_or("a typed value"),
                json_type(v)
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!(
                "{}: {value} is not one of {}",
                at(path),
                Value::Array(allowed.clone())
            ));
        }
    }
    if let Some(rules) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            let text = rule["rule"].as_str().unwrap_or_default();
            match CEL_RULES.iter().find(|r| r.rule == text) {
                Some(r) if (r.check)(value) => {}
                Some(r) => errors.push(format!("{}: {}", at(path), r.message)),
                None => errors.push(format!(
                    "{}: CEL rule {text:?} has no Rust twin in crd::CEL_RULES",
                    at(path)
                )),
            }
        }
    }
}

fn check_object(s: &Map<String, Value>, map: &mut Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    let props = s.get("properties").and_then(Value::as_object);
    // The apiserver defaults absent fields before it validates (and CEL sees the defaults).
    if let Some(props) = props {
        for (k, p) in props {
            if let (false, Some(d)) = (map.contains_key(k), p.get("default")) {
                map.insert(k.clone(), d.clone());
            }
        }
    }
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(r) {
            errors.push(format!("{path}.{r}: required"));
        }
    }
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (k, v) in map.iter_mut() {
        let child = format!("{path}.{k}");
        if let Some(p) = props.and_then(|p| p.get(k)) {
            check(p, v, &child, errors);
        } else if let Some(extra) = s.get("additionalProperties").filter(|a| a.is_object()) {
            check(extra, v, &child, errors);
        } else if !preserve && !(path.is_empty() && (k == "apiVersion" || k == "kind" || k == "metadata")) {
            errors.push(format!("{child}: unknown field"));
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
