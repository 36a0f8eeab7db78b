//! The OpenAI batch file format: request lines in (`custom_id`, `method`, `url`, `body`), and
//! result lines out (`id`, `custom_id`, `response {status_code, request_id, body}`, `error`),
//! the body being what the endpoint answers (`chat.completion` or `text_completion`).
//!
//! A file written for a hosted batch API runs unchanged: body fields gemmactl has no use for
//! (`frequency_penalty`, `logprobs`, …) are ignored and named once on stderr, and a model name
//! that is not installed here runs on `--model` (said once too).

use openai_protocol::ResponseFormat;
use serde_json::{json, Map, Value};

use super::job::{Ask, Endpoint, ErrorKind, Format, Line, LineError, LineId, Overrides, Request};
use super::line::Answer;
use super::parse;
use crate::domain::Constraint;

/// Body fields read; any other is ignored (and named once).
const USED: [&str; 14] = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
    "stream",
    "response_format",
    "grammar",
];

/// An OpenAI batch request line.
pub(super) fn parse(n: usize, obj: &Map<String, Value>, endpoint: Endpoint) -> Line {
    let id = obj.get("custom_id").and_then(LineId::from_value);
    let request = request(n, obj, endpoint, id.is_some());
    Line {
        number: n,
        id,
        format: Format::OpenAi(endpoint),
        request,
    }
}

fn request(
    n: usize,
    obj: &Map<String, Value>,
    endpoint: Endpoint,
    has_id: bool,
) -> Result<Request, LineError> {
    if !has_id {
        return Err(LineError::field(
            n,
            "custom_id",
            "has no usable \"custom_id\": give every request a unique custom_id string",
        ));
    }
    match obj.get("method").and_then(Value::as_str) {
        None | Some("POST") => {}
        Some(other) => {
            return Err(LineError::field(
                n,
                "method",
                format!("has method {other:?}: batch requests are POST"),
            ))
        }
    }
    match obj.get("url").and_then(Value::as_str) {
        Some(url) if url == endpoint.url() => {}
        Some(url) => {
            return Err(LineError::field(
                n,
                "url",
                format!(
                    "asks for {url}, which gemmactl does not serve: use {} or {}",
                    Endpoint::Chat.url(),
                    Endpoint::Completions.url()
                ),
            ))
        }
        None => {
            return Err(LineError::field(
                n,
                "url",
                format!(
                    "has no \"url\": use {} or {}",
                    Endpoint::Chat.url(),
                    Endpoint::Completions.url()
                ),
            ))
        }
    }
    let Some(Value::Object(body)) = obj.get("body") else {
        return Err(LineError::field(
            n,
            "body",
            "has no \"body\" object: it holds the request (model, messages, max_tokens, …)",
        ));
    };
    let ask = match endpoint {
        Endpoint::Chat => {
            let m = body.get("messages").ok_or_else(|| {
                LineError::field(n, "messages", "has no \"messages\" in its body")
            })?;
            Ask::Messages(parse::messages(n, m)?)
        }
        Endpoint::Completions => {
            let p = body
                .get("prompt")
                .ok_or_else(|| LineError::field(n, "prompt", "has no \"prompt\" in its body"))?;
            // A list of one prompt is the same request; more would be several completions.
            let p = match p {
                Value::Array(items) if items.len() == 1 => &items[0],
                Value::Array(_) => {
                    return Err(LineError::field(
                        n,
                        "prompt",
                        "has several prompts in one request: give each its own line",
                    ))
                }
                p => p,
            };
            Ask::Prompt(parse::prompt(n, "prompt", p)?)
        }
    };
    if let Some(count) = parse::whole(n, body, "n", 1)? {
        if count != 1 {
            return Err(LineError::field(
                n,
                "n",
                format!("asks for n = {count} choices: gemmactl gives one per request"),
            ));
        }
    }
    let max_tokens = match parse::whole(n, body, "max_completion_tokens", 1)? {
        Some(v) => Some(v),
        None => parse::whole(n, body, "max_tokens", 1)?,
    };
    Ok(Request {
        model: parse::string(n, body, "model")?,
        ask,
        system: None,
        overrides: Overrides {
            max_tokens,
            temperature: parse::number(n, body, "temperature")?,
            top_p: parse::number(n, body, "top_p")?,
            top_k: parse::whole(n, body, "top_k", 0)?,
            seed: parse::whole(n, body, "seed", 0)?,
            stop: parse::stop(n, body, "stop")?,
            constraint: constraint(n, body)?,
        },
        ignored: body
            .keys()
            .filter(|k| !USED.contains(&k.as_str()))
            .cloned()
            .collect(),
    })
}

/// `response_format` as OpenAI's API reads it, or `grammar` (GBNF text) as llama.cpp's server
/// reads it.
fn constraint(n: usize, body: &Map<String, Value>) -> Result<Option<Constraint>, LineError> {
    let format = match body.get("response_format").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => match ResponseFormat::from_value(v) {
            Ok(ResponseFormat::Text) => None,
            Ok(ResponseFormat::JsonObject) => Some(Constraint::any_json_object()),
            Ok(ResponseFormat::JsonSchema { schema, .. }) => Some(Constraint::JsonSchema(schema)),
            Err(why) => return Err(LineError::field(n, "response_format", why)),
        },
    };
    match (format, body.get("grammar").filter(|v| !v.is_null())) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(LineError::field(
            n,
            "grammar",
            "has both a JSON response_format and a \"grammar\": give one of them",
        )),
        (Some(c), None) => parse::checked(n, ("response_format", c)),
        (None, Some(Value::String(g))) => {
            parse::checked(n, ("grammar", Constraint::Grammar(g.clone())))
        }
        (None, Some(_)) => Err(LineError::field(
            n,
            "grammar",
            "\"grammar\" must be a string of GBNF rules",
        )),
    }
}

/// The id of the `n`th line's result, which also carries the batch's id so `--resume` can keep
/// it: `batch_req_{batch}_{line}`.
fn result_id(batch_id: &str, line: usize) -> String {
    format!("batch_req_{batch_id}_{line}")
}

/// The batch id a result line of ours carries, if it is one.
pub(super) fn batch_of(record: &Value) -> Option<String> {
    let id = record.get("id")?.as_str()?.strip_prefix("batch_req_")?;
    let (batch, line) = id.rsplit_once('_')?;
    line.parse::<usize>().ok()?;
    Some(batch.to_string())
}

/// A result line for an answered request.
pub(super) fn success(batch_id: &str, line: &Line, endpoint: Endpoint, answer: &Answer) -> Value {
    let usage = &answer.completion.usage;
    let usage = json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    });
    let finish = answer.completion.finish_reason.as_str();
    let created = unix_now();
    let body = match endpoint {
        Endpoint::Chat => json!({
            "id": format!("chatcmpl-{batch_id}-{}", line.number),
            "object": "chat.completion",
            "created": created,
            "model": answer.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish,
            }],
            "usage": usage,
            "system_fingerprint": null,
            "timings": answer.completion.timings,
        }),
        Endpoint::Completions => json!({
            "id": format!("cmpl-{batch_id}-{}", line.number),
            "object": "text_completion",
            "created": created,
            "model": answer.model,
            "choices": [{
                "index": 0,
                "text": answer.text,
                "logprobs": null,
                "finish_reason": finish,
            }],
            "usage": usage,
            "system_fingerprint": null,
            "timings": answer.completion.timings,
        }),
    };
    json!({
        "id": result_id(batch_id, line.number),
        "custom_id": line.id.as_ref().map(|i| i.value.clone()),
        "response": {
            "status_code": 200,
            "request_id": format!("req_{batch_id}_{}", line.number),
            "body": body,
        },
        "error": null,
    })
}

/// A result line for a request that was not answered. A line that is not even a request (not
/// JSON) has no response, only an error, as hosted batches report input they cannot read; any
/// other failure is the error response the endpoint would have given.
pub(super) fn failure(batch_id: &str, line: &Line, error: &LineError) -> Value {
    let custom_id = line.id.as_ref().map(|i| i.value.clone());
    if error.kind == ErrorKind::InvalidJson {
        return json!({
            "id": result_id(batch_id, line.number),
            "custom_id": custom_id,
            "response": null,
            "error": {"code": error.kind.code(), "message": error.message, "line": line.number},
        });
    }
    let kind = if error.kind.status() >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json!({
        "id": result_id(batch_id, line.number),
        "custom_id": custom_id,
        "response": {
            "status_code": error.kind.status(),
            "request_id": format!("req_{batch_id}_{}", line.number),
            "body": {"error": {
                "message": error.message,
                "type": kind,
                "param": error.param,
                "code": error.kind.code(),
                "line": line.number,
            }},
        },
        "error": null,
    })
}

/// Whether a result line of this format is an answer (not an error).
pub(super) fn is_success(record: &Value) -> bool {
    record.get("error").is_none_or(Value::is_null)
        && record
            .get("response")
            .and_then(|r| r.get("status_code"))
            .and_then(Value::as_u64)
            == Some(200)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Line {
        parse::lines(text.as_bytes()).remove(0)
    }

    #[test]
    fn a_hosted_batch_line_reads_unchanged() {
        let l = one(
            r#"{"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world!"}], "max_completion_tokens": 20, "frequency_penalty": 0.5}}"#,
        );
        assert_eq!(l.format, Format::OpenAi(Endpoint::Chat));
        assert_eq!(l.id.as_ref().unwrap().key, "request-1");
        let r = l.request.unwrap();
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(r.overrides.max_tokens, Some(20));
        assert_eq!(r.ignored, ["frequency_penalty"]);
        let l = one(
            r#"{"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": ["Once upon"], "max_tokens": 8}}"#,
        );
        assert_eq!(l.format, Format::OpenAi(Endpoint::Completions));
        assert_eq!(l.request.unwrap().ask, Ask::Prompt("Once upon".into()));
    }

    #[test]
    fn requests_gemmactl_cannot_serve_are_refused_by_name() {
        let e = one(r#"{"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}"#).request.unwrap_err();
        assert!(
            e.message
                .contains("/v1/embeddings, which gemmactl does not serve"),
            "{}",
            e.message
        );
        let e = one(r#"{"custom_id": "n", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "n": 3}}"#).request.unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = one(r#"{"url": "/v1/chat/completions", "body": {}}"#)
            .request
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("custom_id"));
    }

    #[test]
    fn result_ids_carry_the_batch() {
        let l =
            one(r#"{"custom_id": "x", "url": "/v1/chat/completions", "body": {"messages": []}}"#);
        let e = l.request.clone().unwrap_err();
        let record = failure("b12ab", &l, &e);
        assert_eq!(batch_of(&record).as_deref(), Some("b12ab"));
        assert!(!is_success(&record));
        assert_eq!(record["response"]["status_code"], 400);
        assert_eq!(record["response"]["body"]["error"]["line"], 1);
    }
}
