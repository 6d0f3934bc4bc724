//! Turns generated token bytes into OpenAI streaming chunks: reassembles UTF-8 split across tokens,
//! holds back text that might be the start of a stop sequence, and cuts the output at one.

use serde_json::{json, Value};
use stacknet_protocol::contract::{Usage, Workload};
use tokio::sync::mpsc;

use crate::backend::BackendError;

pub struct Emitter {
    chunks: mpsc::Sender<Value>,
    workload: Workload,
    id: String,
    model: String,
    created: u64,
    stops: Vec<String>,
    /// Bytes of a character not complete yet.
    partial: Vec<u8>,
    /// Text generated but not sent, because it may begin a stop sequence.
    held: String,
}

/// Whether generation goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// A stop sequence appeared; the text before it has been sent.
    Stopped,
}

impl Emitter {
    pub fn new(
        chunks: mpsc::Sender<Value>,
        workload: Workload,
        id: String,
        model: String,
        stops: Vec<String>,
    ) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            chunks,
            workload,
            id,
            model,
            created,
            stops,
            partial: Vec::new(),
            held: String::new(),
        }
    }

    fn send(&self, choices: Value, usage: Option<&Usage>) -> Result<(), BackendError> {
        let object = if self.workload == Workload::Completion {
            "text_completion"
        } else {
            "chat.completion.chunk"
        };
        let mut chunk = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        if let Some(u) = usage {
            chunk["usage"] = json!({
                "prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                "total_tokens": u.input_tokens + u.output_tokens,
            });
        }
        // The worker thread is not on the runtime: a blocking send waits for the reader (back-pressure).
        self.chunks
            .blocking_send(chunk)
            .map_err(|_| BackendError::Abandoned)
    }

    fn send_text(&self, text: &str, finish: Option<&str>) -> Result<(), BackendError> {
        let choice = match self.workload {
            Workload::Completion => {
                json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null})
            }
            _ if finish.is_some() => json!({"index": 0, "delta": {}, "finish_reason": finish}),
            _ => json!({"index": 0, "delta": {"content": text}, "finish_reason": null}),
        };
        self.send(json!([choice]), None)
    }

    /// The opening chunk of a chat stream carries the role, as OpenAI's does.
    pub fn start(&self) -> Result<(), BackendError> {
        if self.workload == Workload::Chat {
            self.send(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
                None,
            )?;
        }
        Ok(())
    }

    pub fn is_abandoned(&self) -> bool {
        self.chunks.is_closed()
    }

    /// Takes one token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Flow, BackendError> {
        self.partial.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid bytes, not merely incomplete: replace them rather than stall forever.
                let text = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.held.push_str(&text);
                return self.release();
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.partial.split_off(valid);
        let complete = std::mem::replace(&mut self.partial, rest);
        self.held.push_str(&String::from_utf8_lossy(&complete));
        self.release()
    }

    /// Sends what can no longer turn into a stop sequence; cuts at a stop sequence if one appeared.
    fn release(&mut self) -> Result<Flow, BackendError> {
        let cut = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = cut {
            let before = self.held[..at].to_owned();
            self.held.clear();
            if !before.is_empty() {
                self.send_text(&before, None)?;
            }
            return Ok(Flow::Stopped);
        }
        let keep = self.stops.iter().map(|s| s.len() - 1).max().unwrap_or(0);
        let mut safe = self.held.len().saturating_sub(keep);
        while !self.held.is_char_boundary(safe) {
            safe -= 1;
        }
        if safe > 0 {
            let out: String = self.held.drain(..safe).collect();
            self.send_text(&out, None)?;
        }
        Ok(Flow::Continue)
    }

    /// Sends the held text, the finish reason and the usage.
    pub fn finish(mut self, reason: &str, usage: &Usage) -> Result<(), BackendError> {
        let rest = std::mem::take(&mut self.held) + &String::from_utf8_lossy(&self.partial);
        if !rest.is_empty() {
            self.send_text(&rest, None)?;
        }
        self.send_text("", Some(reason))?;
        self.send(json!([]), Some(usage))
    }
}
