//! What an engine is asked for: the conversation, how to turn it into a prompt, and how to
//! sample the reply.

use serde::{Deserialize, Serialize};

use super::message::{Message, Role};

/// How a conversation becomes the model's input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum PromptFormat {
    /// The chat template when the model file has one, plain completion otherwise.
    #[default]
    Auto,
    /// A chat template: `template` names a built-in one (e.g. `gemma`); absent means the model
    /// file's own.
    Chat {
        /// A built-in template's name, or `None` for the model file's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
    },
    /// No template: the texts are continued as plain text.
    Completion,
    /// Fill in the middle: the texts are the code before the cursor, `suffix` the code after
    /// it; the model writes what goes between, prompted with its vocabulary's fill-in-the-middle
    /// tokens (see [`super::ModelFacts::fill_in_middle`]). Engines without them refuse it.
    FillInMiddle {
        /// The code after the cursor (may be empty).
        suffix: String,
    },
}

/// How to sample a reply. The numbers are `f64` so that a value keeps one representation from
/// the command line to the history database and every export (`0.8` stays `0.8`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate; `None` means until end of sequence or the context is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// 0 means greedy.
    pub temperature: f64,
    /// 0 disables top-k.
    pub top_k: u32,
    /// Nucleus sampling; `None` means the engine's default (0.95), 1.0 disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Seed of the sampler's random numbers; `None` is a new one per reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// Generation stops before the first occurrence of any of these strings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The form the reply must take (structured output); `None` is free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
}

/// A constraint on the form of a reply: the engine samples only tokens that keep the reply
/// inside it, and lets the reply end only where it is complete, so a reply that ends by itself
/// always parses. Kept with the reply's parameters in the history, so a stored reply says what it
/// was held to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// A JSON Schema: the reply is one JSON value that satisfies it (as far as llama.cpp's
    /// converter enforces its keywords; see the README).
    JsonSchema(serde_json::Value),
    /// A grammar in GBNF notation (llama.cpp's); the reply matches its `root` rule.
    Grammar(String),
}

impl Constraint {
    /// Any JSON object: what OpenAI's `{"type": "json_object"}` asks for.
    pub fn any_json_object() -> Constraint {
        Constraint::JsonSchema(serde_json::json!({"type": "object"}))
    }

    /// What the constraint is, for sentences: `JSON Schema` or `grammar`.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) => "JSON Schema",
            Constraint::Grammar(_) => "grammar",
        }
    }

    /// Checks what can be checked without an engine, so that a broken schema or grammar is
    /// refused before a model is loaded: a schema must be an object (or a boolean) that is
    /// valid against the JSON Schema meta-schema and refers only inside itself; a grammar must
    /// define `root`. The engine checks the rest (llama.cpp's converter and GBNF parser) before
    /// it generates anything. The error is one sentence without a subject's name, which the
    /// caller puts in front (`--json-schema FILE: …`).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Constraint::JsonSchema(schema) => check_schema(schema),
            Constraint::Grammar(gbnf) => check_grammar(gbnf),
        }
    }
}

fn check_schema(schema: &serde_json::Value) -> Result<(), String> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(format!(
            "the JSON Schema is a JSON {}, not an object: give one such as {{\"type\": \"object\", \"properties\": {{…}}}}",
            json_kind(schema)
        ));
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Err(format!(
            "the JSON Schema is not valid ({} at {}): fix that keyword",
            e,
            pointer_or_root(&e.instance_path().to_string())
        ));
    }
    if let Some(r) = outside_ref(schema) {
        return Err(format!(
            "the JSON Schema refers to {r:?} outside itself, which gemmactl does not fetch: put that definition under \"$defs\" and refer to it as \"#/$defs/…\""
        ));
    }
    // Resolving the references inside the document finds a `#/$defs/…` that names nothing.
    if let Err(e) = jsonschema::options().build(schema) {
        return Err(format!("the JSON Schema cannot be used ({e}): fix it"));
    }
    Ok(())
}

/// The first `$ref` that does not point inside the document.
fn outside_ref(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                if !r.starts_with('#') {
                    return Some(r.clone());
                }
            }
            map.values().find_map(outside_ref)
        }
        serde_json::Value::Array(items) => items.iter().find_map(outside_ref),
        _ => None,
    }
}

fn check_grammar(gbnf: &str) -> Result<(), String> {
    if gbnf.trim().is_empty() {
        return Err("the grammar is empty: give GBNF rules starting with `root ::= …`".into());
    }
    if gbnf.contains('\0') {
        return Err("the grammar contains a NUL character: remove it".into());
    }
    let defines_root = gbnf.lines().any(|l| {
        l.trim_start()
            .strip_prefix("root")
            .is_some_and(|r| r.trim_start().starts_with("::="))
    });
    if !defines_root {
        return Err("the grammar has no `root ::= …` rule, where GBNF starts: add one".into());
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn pointer_or_root(pointer: &str) -> String {
    if pointer.is_empty() {
        "the top".to_string()
    } else {
        pointer.to_string()
    }
}

/// The sampling defaults every front end starts from.
impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: None,
            temperature: SamplingParams::DEFAULT_TEMPERATURE,
            top_k: SamplingParams::DEFAULT_TOP_K,
            top_p: None,
            seed: None,
            stop: Vec::new(),
            constraint: None,
        }
    }
}

impl SamplingParams {
    /// Temperature when none is asked for.
    pub const DEFAULT_TEMPERATURE: f64 = 0.8;
    /// Top-k when none is asked for.
    pub const DEFAULT_TOP_K: u32 = 40;
    /// Top-p engines use when none is asked for.
    pub const DEFAULT_TOP_P: f64 = 0.95;

    /// Checks every value, so a bad one is refused with a sentence before anything is loaded.
    /// `flag` formats a parameter's name as the caller's user knows it (`--top-p`, `top_p`).
    pub fn check(&self, flag: impl Fn(&str) -> String) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "{} {} is not valid: use a number ≥ 0 (0 = greedy)",
                flag("temperature"),
                self.temperature
            ));
        }
        if let Some(p) = self
            .top_p
            .filter(|p| !(p.is_finite() && *p > 0.0 && *p <= 1.0))
        {
            return Err(format!(
                "{} {p} is not valid: use a number greater than 0 and at most 1 (1 = off)",
                flag("top_p")
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(format!(
                "{} 0 asks for nothing: use at least 1",
                flag("max_tokens")
            ));
        }
        if let Some(c) = &self.constraint {
            c.check()?;
        }
        Ok(())
    }
}

/// What a caller asks an engine for.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Unique among the requests in flight on one engine.
    pub id: String,
    /// The whole conversation, oldest first: the engine keeps nothing but a cache.
    pub messages: Vec<Message>,
    /// Names the conversation so an engine can keep its cache between turns.
    pub session: Option<String>,
    /// How the messages become the prompt.
    pub prompt: PromptFormat,
    /// How to sample.
    pub params: SamplingParams,
}

impl GenerateRequest {
    /// One user message continued as plain text, greedily, for at most `max_tokens`: the
    /// reproducible request benchmarks and tests send.
    pub fn greedy_completion(id: String, text: &str, max_tokens: u32) -> GenerateRequest {
        GenerateRequest {
            id,
            messages: vec![Message::new(Role::User, text)],
            session: None,
            prompt: PromptFormat::Completion,
            params: SamplingParams {
                max_tokens: Some(max_tokens),
                temperature: 0.0,
                ..SamplingParams::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_sentences_naming_the_flag() {
        let flag = |n: &str| format!("--{}", n.replace('_', "-"));
        let p = SamplingParams {
            temperature: -1.0,
            ..SamplingParams::default()
        };
        assert!(p.check(flag).unwrap_err().starts_with("--temperature -1"));
        let p = SamplingParams {
            top_p: Some(1.5),
            ..SamplingParams::default()
        };
        assert!(p.check(flag).unwrap_err().contains("--top-p 1.5"));
        let p = SamplingParams {
            max_tokens: Some(0),
            ..SamplingParams::default()
        };
        assert!(p
            .check(|n: &str| n.to_string())
            .unwrap_err()
            .starts_with("max_tokens 0"));
        assert!(SamplingParams::default().check(flag).is_ok());
    }

    #[test]
    fn constraints_are_checked_before_any_engine() {
        let schema = |v: serde_json::Value| Constraint::JsonSchema(v).check();
        assert!(schema(serde_json::json!({"type": "object"})).is_ok());
        assert!(schema(serde_json::json!(true)).is_ok());
        assert!(schema(serde_json::json!([1, 2]))
            .unwrap_err()
            .contains("JSON array, not an object"));
        let why = schema(serde_json::json!({"properties": {"a": {"type": "strng"}}})).unwrap_err();
        assert!(why.contains("/properties/a/type"), "{why}");
        let why = schema(serde_json::json!({"$ref": "https://example.org/s.json"})).unwrap_err();
        assert!(why.contains("outside itself"), "{why}");
        let why = schema(serde_json::json!({"$ref": "#/$defs/missing"})).unwrap_err();
        assert!(why.contains("cannot be used"), "{why}");
        let grammar = |g: &str| Constraint::Grammar(g.into()).check();
        assert!(grammar("root ::= \"yes\" | \"no\"\n").is_ok());
        assert!(grammar("  root::= [a-z]+").is_ok());
        assert!(grammar("rooted ::= \"x\"")
            .unwrap_err()
            .contains("root ::="));
        assert!(grammar(" \n").unwrap_err().contains("empty"));
        let p = SamplingParams {
            constraint: Some(Constraint::Grammar("answer ::= \"x\"".into())),
            ..SamplingParams::default()
        };
        assert!(p.check(|n: &str| n.to_string()).is_err());
    }

    #[test]
    fn a_constraint_is_stored_with_its_kind() {
        let p = SamplingParams {
            constraint: Some(Constraint::JsonSchema(
                serde_json::json!({"type": "string"}),
            )),
            ..SamplingParams::default()
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["constraint"]["json_schema"]["type"], "string");
        let back: SamplingParams = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
        // Parameters stored before constraints existed read as free text.
        let old: SamplingParams =
            serde_json::from_str(r#"{"temperature":0.0,"top_k":40}"#).unwrap();
        assert_eq!(old.constraint, None);
    }

    #[test]
    fn a_temperature_keeps_its_decimal_form() {
        let p = SamplingParams::default();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["temperature"].to_string(), "0.8");
    }
}
