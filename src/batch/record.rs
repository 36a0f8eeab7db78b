//! Result lines: built for each answered or failed line in its own format, and read back by
//! `--resume` (which ids are done, and which batch the file belongs to).

use serde_json::{json, Value};

use super::job::{Format, Line, LineError, LineId};
use super::line::Answer;
use super::openai;

/// The result line for an answer.
pub(super) fn success(batch_id: &str, line: &Line, answer: &Answer) -> Value {
    match line.format {
        Format::OpenAi(endpoint) => openai::success(batch_id, line, endpoint, answer),
        Format::Simple => {
            let mut v = json!({
                "id": line.id.as_ref().map(|i| i.value.clone()),
                "line": line.number,
                "batch_id": batch_id,
                "model": answer.model,
                "text": answer.text,
                "finish_reason": answer.completion.finish_reason,
                "usage": answer.completion.usage,
                "timings": answer.completion.timings,
            });
            if answer.dropped > 0 {
                // The conversation outgrew the context: say what the reply did not see.
                v["dropped_messages"] = json!(answer.dropped);
            }
            v
        }
    }
}

/// The result line for a line that was not answered.
pub(super) fn failure(batch_id: &str, line: &Line, error: &LineError) -> Value {
    match line.format {
        Format::OpenAi(_) => openai::failure(batch_id, line, error),
        Format::Simple => {
            let mut e = json!({"code": error.kind.code(), "message": error.message});
            if let Some(param) = &error.param {
                e["param"] = json!(param);
            }
            json!({
                "id": line.id.as_ref().map(|i| i.value.clone()),
                "line": line.number,
                "batch_id": batch_id,
                "error": e,
            })
        }
    }
}

/// What `--resume` needs to know of a result line already written.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Written {
    /// The line's id (`None` for a line that had none).
    pub(super) id: Option<String>,
    /// An answer, not an error.
    pub(super) success: bool,
    /// The batch it was written by.
    pub(super) batch_id: Option<String>,
}

/// Reads back one of our result lines; `None` when it is not one.
pub(super) fn read_back(record: &Value) -> Option<Written> {
    let obj = record.as_object()?;
    if obj.contains_key("custom_id") && obj.contains_key("response") {
        return Some(Written {
            id: obj
                .get("custom_id")
                .and_then(LineId::from_value)
                .map(|i| i.key),
            success: openai::is_success(record),
            batch_id: openai::batch_of(record),
        });
    }
    if obj.contains_key("id") && obj.contains_key("line") {
        return Some(Written {
            id: obj.get("id").and_then(LineId::from_value).map(|i| i.key),
            success: obj.get("error").is_none_or(Value::is_null) && obj.contains_key("text"),
            batch_id: obj
                .get("batch_id")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    None
}
