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

/// A secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set exactly one of `file`, `env` or `value` for this secret")]
    Ambiguous,
    #[error("cannot read secret file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("environment variable {0} is not set or not valid UTF-8")]
    Env(String),
    #[error("the secret is empty")]
    Empty,
}

impl SecretSource {
    /// Checks the shape (exactly one source) without reading anything.
    pub fn check_shape(&self) -> Result<(), SecretError> {
        let n = self.file.is_some() as u8 + self.env.is_some() as u8 + self.value.is_some() as u8;
        if n == 1 {
            Ok(())
        } else {
            Err(SecretError::Ambiguous)
        }
    }

    /// Reads the secret. Logs a warning (once per call) when a secret file can be
    /// read by other users.
    pub fn resolve(&self) -> Result<String, SecretError> {
        self.check_shape()?;
        let raw = if let Some(path) = &self.file {
            warn_if_world_readable(path);
            std::fs::read_to_string(path).map_err(|source| SecretError::File { path: path.clone(), source })?
        } else if let Some(var) = &self.env {
            std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?
        } else {
            self.value.clone().unwrap_or_default()
        };
        let s = raw.trim().to_string();
        if s.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(s)
    }
}

/// Warns when a file holding a secret is readable by group or others; returns
/// whether it warned.
pub fn warn_if_world_readable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            tracing::warn!(
                "secret file {} is readable by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
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
        assert!(matches!(SecretSource::default().resolve(), Err(SecretError::Ambiguous)));
        assert!(matches!(SecretSource { value: Some(" ".into()), ..Default::default() }.resolve(), Err(SecretError::Empty)));
        let both = SecretSource { value: Some("a".into()), env: Some("B".into()), ..Default::default() };
        assert!(matches!(both.resolve(), Err(SecretError::Ambiguous)));
        // Debug never prints the secret.
        assert!(!format!("{:?}", SecretSource { value: Some("topsecret".into()), ..Default::default() }).contains("topsecret"));
    }
}
