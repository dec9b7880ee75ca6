//! Secrets (keys, connection strings) kept out of the command line and, ideally,
//! out of the main config file: `{ file = "..." }` or `{ env = "VAR" }`.

use serde::Deserialize;
use std::path::PathBuf;

/// Where a secret comes from: one of the three, by construction.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// `{ file = "..." }`: a file holding the secret (surrounding white space
    /// is ignored). Should be readable by the service user only.
    File(PathBuf),
    /// `{ env = "VAR" }`: an environment variable holding the secret (e.g.
    /// from systemd `LoadCredential=` or an `EnvironmentFile=`).
    Env(String),
    /// `{ value = "..." }`: the secret itself, in the config file. Allowed for
    /// trials; the file then must not be readable by other users.
    Value(String),
}

/// Never prints an inline secret.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::File(p) => f.debug_tuple("File").field(p).finish(),
            Secret::Env(v) => f.debug_tuple("Env").field(v).finish(),
            Secret::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// A secret table as written: `{ file = "..." }`, `{ env = "..." }` or
/// `{ value = "..." }`; [`Secret::try_from`] accepts exactly one of them.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    #[serde(default)]
    pub(crate) file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) env: Option<String>,
    #[serde(default)]
    pub(crate) value: Option<String>,
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSecret")
            .field("file", &self.file)
            .field("env", &self.env)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A secret table with none or several of `file`, `env`, `value` (refused
/// where the file is read: a [`Secret`] is always one).
#[derive(Debug, thiserror::Error)]
#[error("set exactly one of `file`, `env` or `value` for this secret (found {0})")]
pub(crate) struct AmbiguousSecret(pub String);

impl TryFrom<RawSecret> for Secret {
    type Error = AmbiguousSecret;

    /// Exactly one of `file`, `env`, `value`; otherwise the error names what
    /// was found ("none", "file and value").
    fn try_from(raw: RawSecret) -> Result<Secret, AmbiguousSecret> {
        match raw {
            RawSecret { file: Some(p), env: None, value: None } => Ok(Secret::File(p)),
            RawSecret { file: None, env: Some(v), value: None } => Ok(Secret::Env(v)),
            RawSecret { file: None, env: None, value: Some(v) } => Ok(Secret::Value(v)),
            RawSecret { file, env, value } => {
                let set: Vec<&str> = [("file", file.is_some()), ("env", env.is_some()), ("value", value.is_some())]
                    .iter()
                    .filter(|(_, set)| *set)
                    .map(|(name, _)| *name)
                    .collect();
                Err(AmbiguousSecret(if set.is_empty() { "none".into() } else { set.join(" and ") }))
            }
        }
    }
}

/// A secret could not be read. The message names where it was looked for
/// (the file, the variable); the caller adds which secret it is (the config
/// key). The OS error is part of the message, not a separate cause, so an
/// error chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {error}")]
    File { path: PathBuf, error: std::io::Error },
    #[error("environment variable {0} is not set or not valid UTF-8")]
    Env(String),
    #[error("the secret is empty ({0})")]
    Empty(String),
}

impl Secret {
    /// Reads the secret. Logs a warning (once per call) when a secret file can be
    /// read by other users.
    pub(crate) fn resolve(&self) -> Result<String, SecretError> {
        let (raw, from) = match self {
            Secret::File(path) => {
                warn_if_world_readable(path);
                let raw = std::fs::read_to_string(path).map_err(|error| SecretError::File { path: path.clone(), error })?;
                (raw, format!("file {}", path.display()))
            }
            Secret::Env(var) => (std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?, format!("environment variable {var}")),
            Secret::Value(v) => (v.clone(), "`value` in the config file".to_string()),
        };
        let s = raw.trim().to_string();
        if s.is_empty() {
            return Err(SecretError::Empty(from));
        }
        Ok(s)
    }

    /// Whether the secret is written in the config file itself (`{ value = "..." }`).
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self, Secret::Value(_))
    }
}

/// The config keys whose secret is written inline in the config file.
pub(crate) fn inline_secrets(config: &super::Config) -> Vec<&'static str> {
    config.sink.secrets().into_iter().filter(|(_, s)| s.is_inline()).map(|(key, _)| key).collect()
}

/// Warns, as for a secret file, when a config file that holds a secret inline
/// is readable by group or others; returns whether it warned.
pub(crate) fn warn_if_config_world_readable(path: &std::path::Path, config: &super::Config) -> bool {
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
pub(crate) fn warn_if_world_readable(path: &std::path::Path) -> bool {
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
        let s = Secret::File(f.clone());
        assert_eq!(s.resolve().unwrap(), "HostName=h;DeviceId=d;SharedAccessKey=k==");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(warn_if_world_readable(&f));

        std::env::set_var("IOMT_TEST_SECRET_X", "abc");
        assert_eq!(Secret::Env("IOMT_TEST_SECRET_X".into()).resolve().unwrap(), "abc");
        assert!(matches!(Secret::Env("IOMT_TEST_SECRET_MISSING".into()).resolve(), Err(SecretError::Env(_))));
        // A table with no source, or two, is refused where the file is read.
        assert!(matches!(Secret::try_from(RawSecret::default()), Err(AmbiguousSecret(_))));
        assert!(matches!(Secret::Value(" ".into()).resolve(), Err(SecretError::Empty(_))));
        let both = RawSecret { value: Some("a".into()), env: Some("B".into()), ..Default::default() };
        assert!(matches!(Secret::try_from(both), Err(AmbiguousSecret(_))));
        // Debug never prints the secret, as written or converted.
        assert!(!format!("{:?}", Secret::Value("topsecret".into())).contains("topsecret"));
        assert!(!format!("{:?}", RawSecret { value: Some("topsecret".into()), ..Default::default() }).contains("topsecret"));
    }

    #[test]
    fn errors_say_where_the_secret_was_looked_for_and_the_os_error_once() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing-key");
        let e = Secret::File(missing.clone()).resolve().unwrap_err();
        let chain = crate::logging::error_chain(&e);
        assert!(chain.contains(&missing.display().to_string()), "{chain}");
        assert_eq!(chain.matches("No such file or directory").count(), 1, "{chain}");
        let empty = d.path().join("empty-key");
        std::fs::write(&empty, "\n").unwrap();
        let e = Secret::File(empty.clone()).resolve().unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains(&empty.display().to_string()), "{e}");
        std::env::set_var("IOMT_TEST_SECRET_BLANK", " ");
        let e = Secret::Env("IOMT_TEST_SECRET_BLANK".into()).resolve().unwrap_err().to_string();
        assert!(e.contains("IOMT_TEST_SECRET_BLANK"), "{e}");
        let e = Secret::try_from(RawSecret { file: Some(empty), value: Some("x".into()), ..Default::default() }).unwrap_err().to_string();
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
    /// A whole config's Debug, as written and validated, never prints an
    /// inline secret (a `{:?}` of the config in a log or a panic message).
    #[test]
    fn debug_of_a_whole_config_never_prints_an_inline_secret() {
        let iothub =
            "[gateway]\nid = \"gw\"\n[sink.iothub]\nconnection_string = { value = \"HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0MQ==\" }\n\
                      transport = \"websocket\"\nproxy = \"p:3128\"\nproxy_credentials = { value = \"nurse:secret2\" }\n";
        let eventhubs = "[gateway]\nid = \"gw\"\n[sink.eventhubs]\nnamespace = \"ns.servicebus.windows.net\"\nevent_hub = \"v\"\n\
                         tenant = \"t\"\nclient_id = \"c\"\nclient_secret = { value = \"secret3\" }\n";
        let dps = "[gateway]\nid = \"gw\"\n[sink.iothub.dps]\nid_scope = \"0ne1\"\ngroup_key = { value = \"c2VjcmV0NA==\" }\n";
        for text in [iothub, eventhubs, dps] {
            let path = std::path::Path::new("gw.toml");
            let raw = format!("{:?}", crate::config::ConfigDraft::parse(text, path).unwrap().raw);
            let valid = format!("{:?}", crate::config::parse_str(text, path).unwrap());
            for shown in [raw, valid] {
                for secret in ["c2VjcmV0MQ==", "secret2", "secret3", "c2VjcmV0NA=="] {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
                assert!(shown.contains("redacted"), "{shown}");
            }
        }
    }
}
