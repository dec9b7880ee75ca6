//! Reading and validating the config file, with errors that point at the line.

use super::units::{self, Unit};
use super::{Config, Problem, RawConfig};
use std::fmt;
use std::path::{Path, PathBuf};

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub(crate) file: PathBuf,
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

impl ConfigError {
    /// An error about `key` (a key path such as `sink.iothub.connection_string`
    /// or `device.0.ble.address`), placed at that key in `text`, or at the
    /// deepest table of it that the file has (a default taken from no line).
    pub(crate) fn at_key(file: &Path, text: &str, key: &str, message: String) -> ConfigError {
        let (line, column) = line_col(text, locate(text, key).unwrap_or(0));
        ConfigError { file: file.to_path_buf(), line, column, message }
    }
}

/// Reads and validates a config file.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_text(path).map(|(c, _)| c)
}

/// Like [`load`], and also returns the file's text, so that checks made later
/// (of files, folders and secrets on this machine) can name the line too.
pub(crate) fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = read_text(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read the config file: {e}"),
    })?;
    let config = parse_str(&text, path)?;
    Ok((config, text))
}

/// The text of a config file. Only a regular file (or a link to one) is
/// read: reading a FIFO would wait for a writer for good (`check-config`,
/// the unit's `ExecStartPre=`, `run` and SIGHUP would hang), and a folder or
/// a device is never a config file.
pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let what = if t.is_dir() {
            "a folder"
        } else if t.is_fifo() {
            "a FIFO (named pipe)"
        } else if t.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("it is {what}, not a file; give the path of the TOML file")));
    }
    std::fs::read_to_string(path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    ConfigDraft::parse(text, path)?.validate()
}

/// A config file read but not validated yet: the tables as written. The
/// demo adjusts its embedded config here (its folders, its sink, its
/// devices) so that what it runs went through the same one validation as
/// every file; nothing edits a [`Config`] once it is validated.
pub(crate) struct ConfigDraft {
    pub(crate) raw: RawConfig,
    text: String,
    file: PathBuf,
}

impl ConfigDraft {
    /// Reads `text` (`path` only names it in messages): a syntax or type
    /// error names its line and column.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<ConfigDraft, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let message = e.span().and_then(|span| explain_duplicate(e.message(), text, span)).unwrap_or_else(|| explain_serde(e.message()));
            let (line, column) = line_col(text, offset);
            ConfigError { file: path.to_path_buf(), line, column, message }
        })?;
        Ok(ConfigDraft { raw, text: text.to_string(), file: path.to_path_buf() })
    }

    /// Validates the tables: the first problem is placed at its key in the
    /// text (or the deepest table of it the text has).
    pub(crate) fn validate(self) -> Result<Config, ConfigError> {
        validate(self.raw).map_err(|problems| {
            let (key, message) = problems.into_iter().next().unwrap_or_else(|| (String::new(), "the configuration is not valid".into()));
            let (line, column) = line_col(&self.text, locate(&self.text, &key).unwrap_or(0));
            ConfigError { file: self.file, line, column, message }
        })
    }
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
    let name: String = at.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'')).collect();
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

/// Checks what types cannot (ranges, exclusive choices, duplicate ids) and
/// turns the file as written into a [`Config`]: the tables in the file's
/// order of importance (gateway, outbox, forwarder, each device, the sink),
/// each by the `validate()` beside its type. Every problem, in that order;
/// the first is the one reported.
pub(crate) fn validate(c: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut errs: Vec<Problem> = Vec::new();
    if c.gateway.id.trim().is_empty() {
        errs.push(("gateway.id".into(), "gateway id must not be empty: give this gateway a name such as \"ward3-bed12\"".into()));
    } else if !c.gateway.id.chars().all(|ch| ch.is_ascii_graphic()) {
        errs.push(("gateway.id".into(), "gateway id must be printable ASCII without spaces (it goes into message ids)".into()));
    }
    // Every number, size and duration has a documented range (config/iomt-edge.toml
    // repeats them). Besides catching typos, the upper bounds keep every sum and
    // product the gateway makes of them (deadlines, backoff, expiry cut-offs)
    // far from overflowing: `max_age = 18446744073709552` (seconds) is more
    // milliseconds than a u64 holds.
    let mut range = |key: &str, value: u128, lo: u128, hi: u128, unit: Unit, default: &str, why: &str| {
        let name = key.rsplit('.').next().unwrap_or(key);
        if let Some(m) = units::out_of_range(name, value, lo, hi, unit, default) {
            errs.push((key.to_string(), if why.is_empty() { m } else { format!("{m} ({why})") }));
        }
    };
    const MIB: u128 = 1 << 20;
    const SEC: u128 = 1000;
    const DAY: u128 = 86_400 * SEC;
    let o = &c.outbox;
    range(
        "outbox.flush_interval_ms",
        o.flush_interval_ms.into(),
        0,
        10_000,
        Unit::Millis,
        "100",
        "a longer window would leave readings uncommitted for too long",
    );
    range("outbox.max_bytes", o.max_bytes.bytes().into(), MIB, 1024 * 1024 * MIB, Unit::Bytes, "256MiB", "");
    range("outbox.max_age", o.max_age.as_millis(), 60 * SEC, 3650 * DAY, Unit::Duration, "7d", "3650d is 10 years");
    range("outbox.cache_bytes", o.cache_bytes.bytes().into(), MIB / 4, 1024 * MIB, Unit::Bytes, "4MiB", "");
    let f = &c.forwarder;
    range("forwarder.batch_max_readings", f.batch_max_readings as u128, 1, 100_000, Unit::Count, "500", "");
    range("forwarder.batch_max_bytes", f.batch_max_bytes.bytes().into(), 1024, 16 * MIB, Unit::Bytes, "64KiB", "");
    range("forwarder.batch_max_age_ms", f.batch_max_age_ms.into(), 0, 600_000, Unit::Millis, "1000", "");
    range("forwarder.retry_initial_ms", f.retry_initial_ms.into(), 1, 3_600_000, Unit::Millis, "500", "");
    range("forwarder.retry_max_ms", f.retry_max_ms.into(), 1, 3_600_000, Unit::Millis, "60000", "");
    range("forwarder.auth_retry_ms", f.auth_retry_ms.into(), 1000, 86_400_000, Unit::Millis, "300000", "");
    if f.retry_initial_ms > f.retry_max_ms {
        errs.push((
            "forwarder.retry_initial_ms".into(),
            format!("retry_initial_ms ({} ms) must not be more than retry_max_ms ({} ms)", f.retry_initial_ms, f.retry_max_ms),
        ));
    }
    let state_dir = c.gateway.state_dir.to_string_lossy();
    if state_dir.is_empty() {
        errs.push(("gateway.state_dir".into(), "state_dir must not be empty: give the folder for the outbox, such as \"/var/lib/iomt-edge\"".into()));
    } else if state_dir.trim() != state_dir {
        // " /var/lib/iomt-edge" is a folder named with a space, relative to
        // the working directory: almost surely not what was meant.
        errs.push((
            "gateway.state_dir".into(),
            format!("state_dir {state_dir:?} starts or ends with a space or other blank: remove it (write \"{}\")", state_dir.trim()),
        ));
    } else if c.gateway.state_dir.is_relative() {
        // The service runs with the working directory / (systemd), the
        // command line wherever it was started: a relative folder would be a
        // different outbox for each.
        errs.push((
            "gateway.state_dir".into(),
            format!("state_dir {state_dir:?} is a relative path: give the full path, such as \"/var/lib/iomt-edge\" (the service runs with the working directory /)"),
        ));
    }
    let devices = super::device::validate_all(c.devices).map_err(|e| errs.extend(e)).ok();
    let sink = c.sink.validate(&c.gateway.id).map_err(|e| errs.extend(e)).ok();
    match (devices, sink) {
        (Some(devices), Some(sink)) if errs.is_empty() => Ok(Config { gateway: c.gateway, outbox: c.outbox, forwarder: c.forwarder, devices, sink }),
        _ => Err(errs),
    }
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
