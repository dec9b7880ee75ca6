//! Secrets (keys, connection strings) kept out of the command line and, ideally,
//! out of the main config file: `{ file = "..." }` or `{ env = "VAR" }`.

use serde::Deserialize;
use std::path::PathBuf;

/// Where a secret comes from. Exactly one field must be set.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A file holding the secret (surrounding white space is ignored). Should be
    /// readable by the service user only.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable holding the secret (e.g. from systemd `LoadCredential=`
    /// or an `EnvironmentFile=`).
    #[serde(default)]
    pub env: Option<String>,
    /// The secret itself, in the config file. Allowed for trials; the file then
    /// must not be readable by other users.
    #[serde(default)]
    pub value: Option<String>,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("file", &self.file)
            .field("env", &self.env)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A secret could not be read. The message names where it was looked for
/// (the file, the variable); the caller adds which secret it is (the config
/// key). The OS error is part of the message, not a separate cause, so an
/// error chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set exactly one of `file`, `env` or `value` for this secret (found {0})")]
    Ambiguous(String),
    #[error("cannot read the secret file {path}: {error}")]
    File { path: PathBuf, error: std::io::Error },
    #[error("environment variable {0} is not set or not valid UTF-8")]
    Env(String),
    #[error("the secret is empty ({0})")]
    Empty(String),
}

impl SecretSource {
    /// Checks the shape (exactly one source) without reading anything.
    pub fn check_shape(&self) -> Result<(), SecretError> {
        let set: Vec<&str> = [("file", self.file.is_some()), ("env", self.env.is_some()), ("value", self.value.is_some())]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name)
            .collect();
        match set.len() {
            1 => Ok(()),
            0 => Err(SecretError::Ambiguous("none".into())),
            _ => Err(SecretError::Ambiguous(set.join(" and "))),
        }
    }

    /// Reads the secret. Logs a warning (once per call) when a secret file can be
    /// read by other users.
    pub fn resolve(&self) -> Result<String, SecretError> {
        self.check_shape()?;
        let (raw, from) = if let Some(path) = &self.file {
            warn_if_world_readable(path);
            let raw = std::fs::read_to_string(path).map_err(|error| SecretError::File { path: path.clone(), error })?;
            (raw, format!("file {}", path.display()))
        } else if let Some(var) = &self.env {
            (std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?, format!("environment variable {var}"))
        } else {
            (self.value.clone().unwrap_or_default(), "`value` in the config file".to_string())
        };
        let s = raw.trim().to_string();
        if s.is_empty() {
            return Err(SecretError::Empty(from));
        }
        Ok(s)
    }

    /// Whether the secret is written in the config file itself (`{ value = "..." }`).
    pub fn is_inline(&self) -> bool {
        self.value.is_some()
    }
}

/// The config keys whose secret is written inline in the config file.
pub fn inline_secrets(config: &super::Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if let Some(h) = &config.sink.iothub {
        let inline = |s: &Option<SecretSource>| s.as_ref().is_some_and(SecretSource::is_inline);
        if inline(&h.connection_string) {
            keys.push("sink.iothub.connection_string");
        }
        if inline(&h.proxy_credentials) {
            keys.push("sink.iothub.proxy_credentials");
        }
        if let Some(d) = &h.dps {
            if inline(&d.symmetric_key) {
                keys.push("sink.iothub.dps.symmetric_key");
            }
            if inline(&d.group_key) {
                keys.push("sink.iothub.dps.group_key");
            }
        }
    }
    if let Some(h) = &config.sink.eventhubs {
        if h.connection_string.as_ref().is_some_and(SecretSource::is_inline) {
            keys.push("sink.eventhubs.connection_string");
        }
        if h.client_secret.as_ref().is_some_and(SecretSource::is_inline) {
            keys.push("sink.eventhubs.client_secret");
        }
    }
    keys
}

/// Warns, as for a secret file, when a config file that holds a secret inline
/// is readable by group or others; returns whether it warned.
pub fn warn_if_config_world_readable(path: &std::path::Path, config: &super::Config) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let keys = inline_secrets(config);
    if keys.is_empty() {
        return false;
    }
    let Ok(meta) = std::fs::metadata(path) else { return false };
    let mode = meta.permissions().mode();
    if mode & 0o044 == 0 {
        return false;
    }
    tracing::warn!(
        "config file {} holds a secret inline ({}) and is readable by other users (mode {:o}); run `chmod 600 {}`, \
         or move the secret to a file only the service can read (`{{ file = \"...\" }}`)",
        path.display(),
        keys.join(", "),
        mode & 0o777,
        path.display()
    );
    true
}

/// Warns when a file holding a secret is readable by group or others; returns
/// whether it warned.
pub fn warn_if_world_readable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            tracing::warn!("secret file {} is readable by other users (mode {:o}); run `chmod 600 {}`", path.display(), mode & 0o777, path.display());
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn resolves_from_file_env_and_value_and_warns_on_loose_permissions() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s");
        std::fs::write(&f, "  HostName=h;DeviceId=d;SharedAccessKey=k==\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!warn_if_world_readable(&f));
        let s = SecretSource { file: Some(f.clone()), ..Default::default() };
        assert_eq!(s.resolve().unwrap(), "HostName=h;DeviceId=d;SharedAccessKey=k==");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(warn_if_world_readable(&f));

        std::env::set_var("IOMT_TEST_SECRET_X", "abc");
        assert_eq!(SecretSource { env: Some("IOMT_TEST_SECRET_X".into()), ..Default::default() }.resolve().unwrap(), "abc");
        assert!(matches!(SecretSource { env: Some("IOMT_TEST_SECRET_MISSING".into()), ..Default::default() }.resolve(), Err(SecretError::Env(_))));
        assert!(matches!(SecretSource::default().resolve(), Err(SecretError::Ambiguous(_))));
        assert!(matches!(SecretSource { value: Some(" ".into()), ..Default::default() }.resolve(), Err(SecretError::Empty(_))));
        let both = SecretSource { value: Some("a".into()), env: Some("B".into()), ..Default::default() };
        assert!(matches!(both.resolve(), Err(SecretError::Ambiguous(_))));
        // Debug never prints the secret.
        assert!(!format!("{:?}", SecretSource { value: Some("topsecret".into()), ..Default::default() }).contains("topsecret"));
    }

    #[test]
    fn errors_say_where_the_secret_was_looked_for_and_the_os_error_once() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing-key");
        let e = SecretSource { file: Some(missing.clone()), ..Default::default() }.resolve().unwrap_err();
        let chain = crate::logging::error_chain(&e);
        assert!(chain.contains(&missing.display().to_string()), "{chain}");
        assert_eq!(chain.matches("No such file or directory").count(), 1, "{chain}");
        let empty = d.path().join("empty-key");
        std::fs::write(&empty, "\n").unwrap();
        let e = SecretSource { file: Some(empty.clone()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains(&empty.display().to_string()), "{e}");
        std::env::set_var("IOMT_TEST_SECRET_BLANK", " ");
        let e = SecretSource { env: Some("IOMT_TEST_SECRET_BLANK".into()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("IOMT_TEST_SECRET_BLANK"), "{e}");
        let e = SecretSource { file: Some(empty), value: Some("x".into()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("found file and value"), "{e}");
    }

    #[test]
    fn a_readable_config_with_an_inline_secret_is_warned_about() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("gw.toml");
        let inline = "[gateway]\nid = \"gw\"\n[sink.iothub]\nconnection_string = { value = \"HostName=h;DeviceId=d;SharedAccessKey=a2V5\" }\n";
        std::fs::write(&f, inline).unwrap();
        let config = crate::config::load(&f).unwrap();
        assert_eq!(inline_secrets(&config), vec!["sink.iothub.connection_string"]);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(warn_if_config_world_readable(&f, &config), "mode 644 with an inline secret");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(warn_if_config_world_readable(&f, &config), "group-readable too, as for a secret file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!warn_if_config_world_readable(&f, &config));
        // A secret kept in its own file leaves a readable config alone.
        let by_file = inline.replace("{ value = \"HostName=h;DeviceId=d;SharedAccessKey=a2V5\" }", "{ file = \"/etc/iomt-edge/cs\" }");
        std::fs::write(&f, by_file).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = crate::config::load(&f).unwrap();
        assert!(inline_secrets(&config).is_empty());
        assert!(!warn_if_config_world_readable(&f, &config));
    }
}
