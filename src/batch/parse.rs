//! Reading the input: lines split and parsed one by one, the format detected per line, the simple
//! form read here and the OpenAI form in `openai.rs`. A bad line becomes an error for that line
//! only; duplicate ids are the one thing that stops the whole batch, before any work.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::job::{Ask, ErrorKind, Format, Line, LineError, LineId, Overrides, Request};
use super::openai;
use crate::chat::content;
use crate::domain::{Constraint, Message, Role};

/// The fields of a simple line, in the order the error for an unknown one lists them.
const SIMPLE_FIELDS: [&str; 13] = [
    "id",
    "prompt",
    "messages",
    "system",
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "json_schema",
    "grammar",
];

/// Every non-blank line of `input`, parsed.
pub(super) fn lines(input: &[u8]) -> Vec<Line> {
    // Some editors start a UTF-8 file with a byte-order mark; it is not part of the first line.
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let raw: Vec<(usize, &[u8])> = input
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    // A line too broken to say its own format is reported in the file's.
    let fallback = raw
        .iter()
        .find_map(|(_, l)| serde_json::from_slice::<Map<String, Value>>(l).ok())
        .map(|obj| detect(&obj))
        .unwrap_or(Format::Simple);
    raw.into_iter()
        .map(|(number, bytes)| line(number, bytes, fallback))
        .collect()
}

/// Two lines with the same id, as a sentence naming both, if there are any.
pub(super) fn duplicate_ids(lines: &[Line]) -> Option<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in lines {
        let Some(id) = &line.id else { continue };
        if let Some(first) = seen.insert(&id.key, line.number) {
            return Some(format!(
                "lines {first} and {} have the same id {}: give every line its own id",
                line.number, id.value
            ));
        }
    }
    None
}

/// The format a line is in: an OpenAI request names its `custom_id`, `url` and `body`.
fn detect(obj: &Map<String, Value>) -> Format {
    if ["custom_id", "body", "url", "method"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        let endpoint = match obj.get("url").and_then(Value::as_str) {
            Some(url) if url == super::job::Endpoint::Completions.url() => {
                super::job::Endpoint::Completions
            }
            _ => super::job::Endpoint::Chat,
        };
        Format::OpenAi(endpoint)
    } else {
        Format::Simple
    }
}

fn line(number: usize, bytes: &[u8], fallback: Format) -> Line {
    let bad = |what: String| Line {
        number,
        id: None,
        format: fallback,
        request: Err(LineError::new(ErrorKind::InvalidJson, number, what)),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bad("is not valid UTF-8 text".into());
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return bad(format!("is not valid JSON ({})", json_error(&e))),
    };
    let Value::Object(obj) = value else {
        return bad(
            "is not a JSON object: write {\"id\": …, \"prompt\": …} or an OpenAI batch request"
                .into(),
        );
    };
    match detect(&obj) {
        Format::Simple => simple(number, &obj),
        Format::OpenAi(endpoint) => openai::parse(number, &obj, endpoint),
    }
}

/// serde_json's message without its `at line 1`: the line is ours to name, the column is kept.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.split(" at line ").next().unwrap_or(&text);
    format!("{what} at column {}", e.column())
}

/// A simple line: `{"id", "prompt" | "messages", …}`.
fn simple(number: usize, obj: &Map<String, Value>) -> Line {
    let id = obj.get("id").and_then(LineId::from_value);
    let request = simple_request(number, obj, id.is_some());
    Line {
        number,
        id,
        format: Format::Simple,
        request,
    }
}

fn simple_request(n: usize, obj: &Map<String, Value>, has_id: bool) -> Result<Request, LineError> {
    if let Some(unknown) = obj.keys().find(|k| !SIMPLE_FIELDS.contains(&k.as_str())) {
        return Err(LineError::field(
            n,
            unknown,
            format!(
                "has an unknown field \"{unknown}\": the fields are {}",
                SIMPLE_FIELDS.join(", ")
            ),
        ));
    }
    if !has_id {
        let what = match obj.get("id") {
            None => "has no \"id\": give every line a unique id (a string or a number)",
            Some(_) => "has an \"id\" that is not a non-empty string or a whole number",
        };
        return Err(LineError::field(n, "id", what));
    }
    let ask = match (obj.get("prompt"), obj.get("messages")) {
        (Some(_), Some(_)) => {
            return Err(LineError::field(
                n,
                "messages",
                "has both \"prompt\" and \"messages\": give one of them",
            ))
        }
        (None, None) => {
            return Err(LineError::field(
                n,
                "prompt",
                "has no \"prompt\" or \"messages\": give the text to answer",
            ))
        }
        (Some(p), None) => Ask::Prompt(prompt(n, "prompt", p)?),
        (None, Some(m)) => Ask::Messages(messages(n, m)?),
    };
    Ok(Request {
        model: string(n, obj, "model")?,
        ask,
        system: string(n, obj, "system")?,
        overrides: Overrides {
            max_tokens: whole(n, obj, "max_tokens", 1)?,
            temperature: number(n, obj, "temperature")?,
            top_p: number(n, obj, "top_p")?,
            top_k: whole(n, obj, "top_k", 0)?,
            seed: whole(n, obj, "seed", 0)?,
            stop: stop(n, obj, "stop")?,
            constraint: constraint(n, obj)?,
        },
        ignored: Vec::new(),
    })
}

/// A non-empty prompt.
pub(super) fn prompt(n: usize, name: &str, value: &Value) -> Result<String, LineError> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(LineError::field(
            n,
            name,
            format!("has an empty \"{name}\": give some text to answer"),
        )),
        _ => Err(LineError::field(
            n,
            name,
            format!("\"{name}\" must be a string"),
        )),
    }
}

/// A conversation: `[{"role", "content"}, …]` ending with the user's message. Content may be a
/// string or a list of parts, text and images (as OpenAI's chat format allows: `chat/content.rs`;
/// a batch file is its user's own, so an image may also be a local file).
pub(super) fn messages(n: usize, value: &Value) -> Result<Vec<Message>, LineError> {
    let bad = |what: String| LineError::field(n, "messages", what);
    let Value::Array(items) = value else {
        return Err(bad(
            "\"messages\" must be a list of {\"role\": …, \"content\": …}".into(),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = i + 1;
        let role = item.get("role").and_then(Value::as_str).unwrap_or("");
        let role = match role {
            // OpenAI's newer name for the system role.
            "developer" => Role::System,
            other => Role::parse(other).ok_or_else(|| {
                bad(format!(
                    "message {at} has role {}: use \"system\", \"user\" or \"assistant\"",
                    item.get("role").unwrap_or(&Value::Null)
                ))
            })?,
        };
        let (content, images) = match item.get("content") {
            Some(Value::String(s)) => (s.clone(), Vec::new()),
            Some(Value::Array(parts)) => content::from_parts(
                parts,
                &format!("message {at}"),
                content::LocalFiles::Allowed,
                "",
            )
            .map_err(bad)?,
            _ => return Err(bad(format!("message {at} has no text \"content\""))),
        };
        if !images.is_empty() && role != Role::User {
            return Err(bad(format!(
                "message {at} is not the user's but holds an image: only user messages show images"
            )));
        }
        out.push(Message::new(role, content).with_images(images));
    }
    match out.last() {
        None => Err(bad(
            "\"messages\" is empty: give at least one user message".into()
        )),
        Some(m) if m.role != Role::User => Err(bad(
            "the last message must be the user's: it is the one answered".into(),
        )),
        Some(m) if m.content.trim().is_empty() && m.images.is_empty() => Err(bad(
            "the last message is empty: give some text to answer".into(),
        )),
        Some(_) => Ok(out),
    }
}

/// An optional string field.
pub(super) fn string(
    n: usize,
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, LineError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(LineError::field(
            n,
            name,
            format!("\"{name}\" must be a string"),
        )),
    }
}

/// An optional number field.
pub(super) fn number(
    n: usize,
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<f64>, LineError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            LineError::field(n, name, format!("\"{name}\" must be a number, not {v}"))
        }),
    }
}

/// An optional whole number from `min` up to what a `u32` holds.
pub(super) fn whole(
    n: usize,
    obj: &Map<String, Value>,
    name: &str,
    min: u32,
) -> Result<Option<u32>, LineError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .filter(|x| *x >= min)
            .map(Some)
            .ok_or_else(|| {
                LineError::field(
                    n,
                    name,
                    format!(
                        "\"{name}\" must be a whole number from {min} to {}, not {v}",
                        u32::MAX
                    ),
                )
            }),
    }
}

/// `json_schema` (a JSON Schema, inline) or `grammar` (GBNF text), checked, so that a line
/// whose schema or grammar cannot be used fails on its own before any model is loaded.
pub(super) fn constraint(
    n: usize,
    obj: &Map<String, Value>,
) -> Result<Option<Constraint>, LineError> {
    let set = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let c = match (set("json_schema"), set("grammar")) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(LineError::field(
                n,
                "grammar",
                "has both \"json_schema\" and \"grammar\": give one of them",
            ))
        }
        (Some(schema), None) => ("json_schema", Constraint::JsonSchema(schema.clone())),
        (None, Some(Value::String(g))) => ("grammar", Constraint::Grammar(g.clone())),
        (None, Some(_)) => {
            return Err(LineError::field(
                n,
                "grammar",
                "\"grammar\" must be a string of GBNF rules",
            ))
        }
    };
    checked(n, c)
}

/// A constraint from a field, checked; the error names the field.
pub(super) fn checked(
    n: usize,
    (field, c): (&str, Constraint),
) -> Result<Option<Constraint>, LineError> {
    match c.check() {
        Ok(()) => Ok(Some(c)),
        Err(why) => Err(LineError::field(
            n,
            field,
            format!("has a \"{field}\" that cannot be used: {why}"),
        )),
    }
}

/// `stop`: a string or a list of strings.
pub(super) fn stop(
    n: usize,
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<Vec<String>>, LineError> {
    let bad = || {
        LineError::field(
            n,
            name,
            format!("\"{name}\" must be a string or a list of strings"),
        )
    };
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Line {
        lines(text.as_bytes()).remove(0)
    }

    fn error(text: &str) -> LineError {
        one(text).request.unwrap_err()
    }

    #[test]
    fn a_simple_line_with_its_parameters() {
        let l = one(
            r#"{"id": 7, "prompt": "Hi", "max_tokens": 5, "temperature": 0, "stop": "\n", "model": "m", "system": "Be brief."}"#,
        );
        assert_eq!(l.format, Format::Simple);
        assert_eq!(l.id.as_ref().unwrap().key, "7");
        let r = l.request.unwrap();
        assert_eq!(r.ask, Ask::Prompt("Hi".into()));
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.system.as_deref(), Some("Be brief."));
        assert_eq!(r.overrides.max_tokens, Some(5));
        assert_eq!(r.overrides.temperature, Some(0.0));
        assert_eq!(r.overrides.stop, Some(vec!["\n".to_string()]));
    }

    #[test]
    fn blank_lines_are_skipped_and_line_numbers_are_the_files() {
        let all =
            lines(b"\n{\"id\":\"a\",\"prompt\":\"x\"}\r\n  \n{\"id\":\"b\",\"prompt\":\"y\"}");
        let numbers: Vec<usize> = all.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [2, 4]);
        let bom = lines(b"\xef\xbb\xbf{\"id\":\"a\",\"prompt\":\"x\"}\n");
        assert!(bom[0].request.is_ok());
    }

    #[test]
    fn each_kind_of_bad_line_is_one_sentence_naming_the_line() {
        let e = error("{\"id\": \"a\", \"prompt\": ");
        assert_eq!(e.kind, ErrorKind::InvalidJson);
        assert!(
            e.message
                .starts_with("line 1: is not valid JSON (EOF while parsing a value at column "),
            "{}",
            e.message
        );
        assert_eq!(error("[1, 2]").kind, ErrorKind::InvalidJson);
        let e = error(r#"{"id": "a"}"#);
        assert_eq!(
            (e.param.as_deref(), e.kind),
            (Some("prompt"), ErrorKind::InvalidRequest)
        );
        let e = error(r#"{"prompt": "x"}"#);
        assert!(e.message.contains("has no \"id\""), "{}", e.message);
        let e = error(r#"{"id": "a", "prompt": "x", "max_token": 3}"#);
        assert!(
            e.message.contains("unknown field \"max_token\""),
            "{}",
            e.message
        );
        let e = error(r#"{"id": "a", "prompt": "x", "temperature": "hot"}"#);
        assert_eq!(
            e.message,
            "line 1: \"temperature\" must be a number, not \"hot\""
        );
        let e = error(r#"{"id": "a", "prompt": "x", "max_tokens": 0}"#);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = error(
            r#"{"id": "a", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
        );
        assert!(
            e.message.contains("last message must be the user's"),
            "{}",
            e.message
        );
        let e = error(r#"{"id": "a", "messages": [{"role": "tool", "content": "x"}]}"#);
        assert!(
            e.message.contains("message 1 has role \"tool\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn invalid_utf8_is_its_own_sentence() {
        let l = lines(&[b'{', 0xff, b'}']).remove(0);
        assert_eq!(
            l.request.unwrap_err().message,
            "line 1: is not valid UTF-8 text"
        );
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let all = lines(b"{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\"}\n{\"id\":\"a\",\"prompt\":\"z\"}\n");
        assert_eq!(
            duplicate_ids(&all).unwrap(),
            "lines 1 and 3 have the same id \"a\": give every line its own id"
        );
        let all = lines(b"{\"id\":7,\"prompt\":\"x\"}\n{\"id\":\"7\",\"prompt\":\"y\"}\n");
        assert!(duplicate_ids(&all).unwrap().starts_with("lines 1 and 2"));
        assert!(duplicate_ids(&all[..1]).is_none());
    }

    #[test]
    fn text_parts_are_joined() {
        let l = one(
            r#"{"id": "a", "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]}"#,
        );
        let Ask::Messages(m) = l.request.unwrap().ask else {
            panic!()
        };
        assert_eq!(
            m,
            vec![
                Message::new(Role::System, "Be brief."),
                Message::new(Role::User, "Hi there")
            ]
        );
    }
}
