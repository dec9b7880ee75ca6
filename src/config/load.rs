//! Reading and validating the config file, with errors that point at the line.

use super::Config;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is not tied to a place (file unreadable).
    pub line: usize,
    pub column: usize,
    /// What is wrong and how to fix it, in one or two sentences.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read the config file: {e}"),
    })?;
    parse_str(&text, path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let at = |offset: usize, message: String| {
        let (line, column) = line_col(text, offset);
        ConfigError { file: path.to_path_buf(), line, column, message }
    };
    let config: Config = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let message = e.span().and_then(|span| explain_duplicate(e.message(), text, span)).unwrap_or_else(|| explain_serde(e.message()));
        at(offset, message)
    })?;
    if let Some((key, message)) = validate(&config).into_iter().next() {
        let offset = locate(text, &key).unwrap_or(0);
        return Err(at(offset, message));
    }
    Ok(config)
}

/// toml says only "duplicate key": name the key (or table) it is about, from
/// the text the error points at.
fn explain_duplicate(msg: &str, text: &str, span: std::ops::Range<usize>) -> Option<String> {
    if !msg.trim().starts_with("duplicate key") {
        return None;
    }
    let at = text.get(span.start..)?;
    let line_start = text[..span.start].rfind('\n').map(|p| p + 1).unwrap_or(0);
    let header = text[line_start..span.start].trim_start();
    let name: String = at
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\''))
        .collect();
    let name = name.trim_matches(|c| c == '"' || c == '\'');
    if name.is_empty() {
        return None;
    }
    Some(if header.starts_with('[') {
        format!("table [{name}] is defined twice; merge the two into one")
    } else {
        format!("duplicate key `{name}`: it is already set above in the same table; keep one")
    })
}

/// Turns serde's wording into a sentence that says how to fix it.
fn explain_serde(msg: &str) -> String {
    let msg = msg.trim();
    if msg.starts_with("unknown field") {
        format!("{msg}. Remove it or fix its spelling; every option is described in config/iomt-edge.toml")
    } else if msg.starts_with("missing field") {
        format!("{msg}. Add it to this table; see config/iomt-edge.toml for an example")
    } else if msg.starts_with("unknown variant") {
        format!("{msg}. Use one of the listed values")
    } else if msg.starts_with("invalid type") {
        format!("{msg}. Check the quoting: strings need quotes, numbers and booleans do not")
    } else {
        msg.to_string()
    }
}

/// A key path: `outbox.max_bytes`, `device.2.ble` (array index as a segment).
type KeyPath = String;

/// Checks what types cannot: ranges, exclusive choices, duplicate ids.
pub(crate) fn validate(c: &Config) -> Vec<(KeyPath, String)> {
    let mut errs = Vec::new();
    if c.gateway.id.trim().is_empty() {
        errs.push(("gateway.id".into(), "gateway id must not be empty: give this gateway a name such as \"ward3-bed12\"".into()));
    } else if !c.gateway.id.chars().all(|ch| ch.is_ascii_graphic()) {
        errs.push(("gateway.id".into(), "gateway id must be printable ASCII without spaces (it goes into message ids)".into()));
    }
    if c.outbox.flush_interval_ms > 10_000 {
        errs.push((
            "outbox.flush_interval_ms".into(),
            "flush_interval_ms above 10000 would leave readings uncommitted for too long; use 0 to 10000 (default 100)".into(),
        ));
    }
    if c.outbox.max_bytes.bytes() < 1024 * 1024 {
        errs.push(("outbox.max_bytes".into(), "max_bytes must be at least 1MiB".into()));
    }
    if c.outbox.max_age.as_secs() < 60 {
        errs.push(("outbox.max_age".into(), "max_age must be at least 1 minute (default 7d)".into()));
    }
    if c.outbox.cache_bytes.bytes() < 256 * 1024 || c.outbox.cache_bytes.bytes() > 1024 * 1024 * 1024 {
        errs.push(("outbox.cache_bytes".into(), "cache_bytes must be between 256KiB and 1GiB (default 4MiB)".into()));
    }
    let f = &c.forwarder;
    if f.batch_max_readings == 0 || f.batch_max_readings > 100_000 {
        errs.push(("forwarder.batch_max_readings".into(), "batch_max_readings must be between 1 and 100000 (default 500)".into()));
    }
    if f.batch_max_bytes.bytes() < 1024 {
        errs.push(("forwarder.batch_max_bytes".into(), "batch_max_bytes must be at least 1KiB (default 64KiB)".into()));
    }
    if f.retry_initial_ms == 0 || f.retry_initial_ms > f.retry_max_ms {
        errs.push((
            "forwarder.retry_initial_ms".into(),
            "retry_initial_ms must be at least 1 and no more than retry_max_ms".into(),
        ));
    }
    let mut ids = HashSet::new();
    for (i, d) in c.devices.iter().enumerate() {
        if d.id.trim().is_empty() {
            errs.push((format!("device.{i}.id"), "device id must not be empty".into()));
        } else if !ids.insert(d.id.clone()) {
            errs.push((format!("device.{i}.id"), format!("device id \"{}\" is used twice; every device needs its own id", d.id)));
        }
        let n = d.simulated.is_some() as u8 + d.ble.is_some() as u8 + d.serial.is_some() as u8;
        if n != 1 {
            errs.push((
                format!("device.{i}"),
                format!(
                    "device \"{}\" needs exactly one adapter table: [device.simulated], [device.ble] or [device.serial] (found {n})",
                    d.id
                ),
            ));
        }
        if d.serial.is_some() {
            errs.push((
                format!("device.{i}.serial"),
                "the serial adapter is planned but not in this version of iomt-edge; use [device.ble] or [device.simulated]".into(),
            ));
        }
        if let Some(s) = &d.simulated {
            if s.interval_ms < 10 {
                errs.push((format!("device.{i}.simulated.interval_ms"), "interval_ms must be at least 10".into()));
            }
            if !(0.0..=1.0).contains(&s.dropout_probability) {
                errs.push((format!("device.{i}.simulated.dropout_probability"), "dropout_probability must be between 0 and 1".into()));
            }
        }
        if let Some(b) = &d.ble {
            let n = b.address.is_some() as u8 + b.name_pattern.is_some() as u8 + b.any_device as u8;
            if n != 1 {
                errs.push((
                    format!("device.{i}.ble"),
                    "set exactly one of `address`, `name_pattern` or `any_device = true`".into(),
                ));
            }
        }
    }
    let s = &c.sink;
    let n = s.file.is_some() as u8 + s.stdout.is_some() as u8 + s.iothub.is_some() as u8;
    if n != 1 {
        errs.push(("sink".into(), format!("[sink] needs exactly one destination table: [sink.file], [sink.stdout] or [sink.iothub] (found {n})")));
    }
    if let Some(h) = &s.iothub {
        errs.extend(h.validate().into_iter().map(|(k, m)| (format!("sink.iothub.{k}"), m)));
    }
    errs
}

/// Finds the byte offset of a key path in the text (the deepest part that exists).
fn locate(text: &str, path: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let segs: Vec<&str> = path.split('.').collect();
    let mut best = None;
    walk(doc.as_table(), &segs, &mut best);
    best
}

fn walk(table: &dyn toml_edit::TableLike, segs: &[&str], best: &mut Option<usize>) {
    let Some((seg, rest)) = segs.split_first() else { return };
    let Some((key, value)) = table.get_key_value(seg) else { return };
    if let Some(s) = key.span().or_else(|| value.span()) {
        *best = Some(s.start);
    }
    match (value, rest.split_first()) {
        (_, None) => {}
        (toml_edit::Item::ArrayOfTables(array), Some((index, rest))) => {
            if let Some(t) = index.parse::<usize>().ok().and_then(|i| array.get(i)) {
                if let Some(s) = t.span() {
                    *best = Some(s.start);
                }
                walk(t, rest, best);
            }
        }
        (item, Some(_)) => {
            if let Some(t) = item.as_table_like() {
                walk(t, rest, best);
            }
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, col.max(1))
}
