//! Strict reading of mapping JSON: case-insensitive field names (as Json.NET
//! binds them), every unknown field reported with its path.

use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;

/// A problem in a mapping file, with the path of the offending field
/// (for example `template[2].template.values[0].valueExpresion`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    /// Where in the mapping.
    pub path: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for MappingError {}

/// Builds a [`MappingError`].
pub(crate) fn err(path: &str, message: impl Into<String>) -> MappingError {
    MappingError { path: path.to_string(), message: message.into() }
}

/// One JSON object of a mapping being read.
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// Path of this object.
    pub(crate) path: String,
    used: RefCell<Vec<String>>,
}

impl<'a> Obj<'a> {
    /// Wraps `v`, which must be an object.
    pub(crate) fn new(v: &'a Value, path: &str) -> Result<Obj<'a>, MappingError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: path.to_string(), used: RefCell::new(Vec::new()) }),
            _ => Err(err(path, "must be a JSON object")),
        }
    }

    /// Fails on the first field not in `allowed` (case-insensitive), before any
    /// other check, so a misspelt field is reported as what it is.
    pub(crate) fn only(&self, allowed: &[&str]) -> Result<(), MappingError> {
        match self.map.keys().find(|k| !allowed.iter().any(|a| a.eq_ignore_ascii_case(k))) {
            Some(k) => Err(err(
                &self.field_path(k),
                format!("unknown field (MedTech rejects a template with fields it does not know; expected one of: {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// Path of a field of this object.
    pub(crate) fn field_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// A field, matched case-insensitively; `null` counts as absent.
    pub(crate) fn get(&self, name: &str) -> Option<(&'a Value, String)> {
        let (k, v) = self.map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        self.used.borrow_mut().push(k.clone());
        if v.is_null() {
            return None;
        }
        Some((v, self.field_path(k)))
    }

    /// A required string field.
    pub(crate) fn req_str(&self, name: &str) -> Result<String, MappingError> {
        match self.get(name) {
            Some((Value::String(s), p)) => {
                if s.trim().is_empty() {
                    Err(err(&p, "must not be empty"))
                } else {
                    Ok(s.clone())
                }
            }
            Some((_, p)) => Err(err(&p, "must be a string")),
            None => Err(err(&self.field_path(name), "is required")),
        }
    }

    /// An optional string field.
    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<String>, MappingError> {
        match self.get(name) {
            Some((Value::String(s), _)) => Ok(Some(s.clone())),
            Some((_, p)) => Err(err(&p, "must be a string")),
            None => Ok(None),
        }
    }

    /// An optional array field.
    pub(crate) fn opt_array(&self, name: &str) -> Result<Option<(&'a Vec<Value>, String)>, MappingError> {
        match self.get(name) {
            Some((Value::Array(a), p)) => Ok(Some((a, p))),
            Some((_, p)) => Err(err(&p, "must be an array")),
            None => Ok(None),
        }
    }

    /// Fails on the first field that was never read.
    pub(crate) fn finish(self) -> Result<(), MappingError> {
        let used = self.used.borrow();
        match self.map.keys().find(|k| !used.contains(k)) {
            Some(k) => Err(err(&self.field_path(k), "unknown field (MedTech rejects a template with fields it does not know)")),
            None => Ok(()),
        }
    }
}

/// Strips `Template` and compares case-insensitively, as MedTech's template
/// factories do (`JsonPathContent` == `jsonpathcontenttemplate`).
pub(crate) fn template_type_is(actual: &str, wanted: &str) -> bool {
    let a = actual.to_ascii_lowercase();
    let a = a.strip_suffix("template").unwrap_or(&a);
    a == wanted.to_ascii_lowercase()
}
