//! The stdout sink: one message per line on standard output (for pipes and trials).

use super::{Sink, SinkError};
use crate::model::Message;
use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

pub(crate) struct StdoutSink {
    pretty: bool,
}

impl StdoutSink {
    pub(crate) fn new(pretty: bool) -> StdoutSink {
        StdoutSink { pretty }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    async fn send(&self, message: &Message) -> Result<(), SinkError> {
        let mut out = if self.pretty { serde_json::to_vec_pretty(message).unwrap_or_default() } else { message.to_json() };
        out.push(b'\n');
        let mut stdout = tokio::io::stdout();
        stdout.write_all(&out).await.map_err(|e| SinkError::Retryable(format!("stdout: {e}")))?;
        stdout.flush().await.map_err(|e| SinkError::Retryable(format!("stdout: {e}")))
    }
}
