//! Choosing each request's next token from the logits of its batch row, free or held to a grammar.
//!
//! Two costs matter on the hot path, because Gemma's vocabulary has 262,144 entries:
//! - llama.cpp's `llama_sampler_sample` copies every logit into a fresh 3 MiB candidate array
//!   per token (a greedy sampler is not a chain, so it gets no reused buffer). Greedy requests
//!   therefore take the argmax of the logits in place, with no copy and no allocation.
//! - A grammar sampler checks candidates against the grammar's parser stacks, which over the
//!   whole vocabulary costs milliseconds per token. So the token is first chosen without it, and
//!   only if the grammar rejects that one token is the whole vocabulary filtered (what llama.cpp's
//!   own `common_sampler` does). Either way the chosen token is one the grammar allows, and for
//!   sampled requests the choice has the grammar-restricted distribution: an allowed token is
//!   kept with its own probability, and a rejection redraws among the allowed ones.
//!
//! Grammars come from the request, so they are untrusted input: they are built through the
//! `common` feature's exception-catching shims, and a grammar llama.cpp cannot use is a sentence
//! for the caller, never an abort of the engine.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use engine_protocol::{Grammar, SamplingParams};

use crate::llama_log;

/// Nucleus sampling when a request does not say.
const DEFAULT_TOP_P: f32 = 0.95;

/// Where llama.cpp's GBNF notation is described, for the sentence about a grammar it refused.
const GBNF_DOCS: &str = "see grammars/README.md in llama.cpp";

/// One request's sampler.
pub(crate) struct TokenSampler {
    /// `None`: greedy (argmax, no llama.cpp sampler at all).
    chain: Option<LlamaSampler>,
    grammar: Option<LlamaSampler>,
    /// A reused candidate array for the grammar's full-vocabulary pass.
    candidates: Vec<LlamaTokenData>,
}

/// The grammar allows no token at all: the reply cannot go on and cannot end.
#[derive(Debug)]
pub(crate) struct Stuck;

impl TokenSampler {
    /// Builds the sampler a request asks for. A grammar or JSON Schema that cannot be used is an
    /// error sentence, before anything is generated.
    pub(crate) fn new(model: &LlamaModel, p: &SamplingParams) -> Result<TokenSampler, String> {
        let grammar = match &p.grammar {
            None => None,
            Some(g) => Some(grammar_sampler(model, g)?),
        };
        Ok(TokenSampler {
            chain: (p.temperature != 0.0).then(|| chain(p)),
            grammar,
            candidates: Vec::new(),
        })
    }

    /// The next token from the logits of batch row `row`.
    pub(crate) fn sample(&mut self, ctx: &LlamaContext<'_>, row: i32) -> Result<LlamaToken, Stuck> {
        let token = match &mut self.chain {
            None => argmax(ctx.get_logits_ith(row)),
            // The chain accepts its own choice (its random state moves on).
            Some(chain) => chain.sample(ctx, row),
        };
        let Some(grammar) = &mut self.grammar else {
            return Ok(token);
        };
        let token = if allows(grammar, token) {
            token
        } else {
            self.constrained(ctx, row)?
        };
        if let Some(grammar) = &mut self.grammar {
            // The token was allowed, so this cannot fail; if llama.cpp still throws, the shim
            // catches it and the grammar's state is unusable, which the next step reports.
            grammar.try_accept(token).map_err(|_| Stuck)?;
        }
        Ok(token)
    }

    /// The whole vocabulary through the grammar, then the usual choice among what is left.
    fn constrained(&mut self, ctx: &LlamaContext<'_>, row: i32) -> Result<LlamaToken, Stuck> {
        let logits = ctx.get_logits_ith(row);
        let mut data = std::mem::take(&mut self.candidates);
        data.clear();
        data.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, l)| LlamaTokenData::new(LlamaToken::new(i as i32), *l, 0.0)),
        );
        let mut array = LlamaTokenDataArray::new(data, false);
        if let Some(grammar) = &mut self.grammar {
            grammar.apply(&mut array);
        }
        let any_allowed = array.data.iter().any(|d| d.logit().is_finite());
        let token = match &mut self.chain {
            _ if !any_allowed => None,
            None => array
                .data
                .iter()
                .filter(|d| d.logit().is_finite())
                .max_by(|a, b| a.logit().total_cmp(&b.logit()))
                .map(|d| d.id()),
            Some(chain) => {
                chain.apply(&mut array);
                array.selected_token()
            }
        };
        self.candidates = array.data;
        token.ok_or(Stuck)
    }
}

/// Whether the grammar, in its current state, allows `token` next.
fn allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
    grammar.apply(&mut one);
    one.data.first().is_some_and(|d| d.logit().is_finite())
}

/// The index of the largest logit (the first one on ties, as llama.cpp's greedy sampler).
fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    let mut best_logit = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_logit {
            best_logit = l;
            best = i;
        }
    }
    LlamaToken::new(best as i32)
}

/// llama.cpp's grammar sampler for a request's constraint; a JSON Schema is first turned into
/// GBNF by llama.cpp's converter.
fn grammar_sampler(model: &LlamaModel, g: &Grammar) -> Result<LlamaSampler, String> {
    let (gbnf, what) = match g {
        Grammar::Gbnf(text) => (text.clone(), "grammar"),
        Grammar::JsonSchema(schema) => (schema_grammar(schema)?, "JSON Schema's grammar"),
    };
    if gbnf.contains('\0') {
        return Err(format!("the {what} contains a NUL character: remove it"));
    }
    if !defines_root(&gbnf) {
        return Err(format!(
            "the {what} has no `root` rule, where GBNF starts: add one such as `root ::= ...` ({GBNF_DOCS})"
        ));
    }
    let mark = llama_log::mark();
    // llama.cpp's grammar parser prints its reason (`expecting ::= at ...`) with fprintf on
    // stderr rather than through its log, so stderr is read for the duration of the call.
    let (sampler, printed) =
        llama_log::with_stderr_captured(|| LlamaSampler::grammar(model, &gbnf, "root"));
    sampler.map_err(|_| {
        let why = parse_error(&printed)
            .or_else(|| llama_log::complaint_since(mark))
            .unwrap_or_else(|| "llama.cpp gave no reason".into());
        format!("the {what} is not valid GBNF ({why}): fix it ({GBNF_DOCS})")
    })
}

/// A JSON Schema as GBNF, through llama.cpp's converter.
fn schema_grammar(schema: &serde_json::Value) -> Result<String, String> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(
            "the JSON Schema is not a JSON object: give one such as {\"type\": \"object\", \"properties\": {...}}"
                .into(),
        );
    }
    // The converter's reason stays inside the crate's C++ shim (it returns a status only), so the
    // sentence names what the converter accepts; gemmactl checks the common mistakes before this.
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|_| {
        "llama.cpp cannot turn the JSON Schema into a grammar: use only what its converter supports (type, properties, required, additionalProperties, items, prefixItems, minItems, maxItems, enum, const, anyOf, oneOf, allOf, $ref within the schema, pattern, minLength, maxLength, format, minimum, maximum), with valid values".to_string()
    })
}

/// Whether GBNF text defines a `root` rule (`root ::= ...` at the start of a line).
fn defines_root(gbnf: &str) -> bool {
    gbnf.lines().any(|l| {
        l.trim_start()
            .strip_prefix("root")
            .is_some_and(|r| r.trim_start().starts_with("::="))
    })
}

/// The reason in what llama.cpp's grammar parser printed: `parse: error parsing grammar: WHY at
/// REST`, where REST is the rest of the grammar from the offending character on (it may start on
/// the next line), followed by the whole grammar. Kept: WHY and the first line of REST, shortened.
fn parse_error(printed: &str) -> Option<String> {
    let (_, rest) = printed.split_once("error parsing grammar: ")?;
    let mut lines = rest.lines();
    let first = lines.next()?.trim_end();
    // The reasons themselves never contain " at ", so the first one separates the two.
    let (why, at) = if let Some((why, at)) = first.split_once(" at ") {
        (why, at.trim())
    } else if let Some(why) = first.strip_suffix(" at") {
        // The offending character starts the next line.
        (
            why,
            lines.find(|l| !l.trim().is_empty()).unwrap_or("").trim(),
        )
    } else {
        (first, "")
    };
    let why = why.trim();
    if why.is_empty() {
        return None;
    }
    if at.is_empty() {
        return Some(why.to_string());
    }
    let mut shown: String = at.chars().take(40).collect();
    if shown.len() < at.len() {
        shown.push('…');
    }
    Some(format!("{why} at `{shown}`"))
}

fn chain(p: &SamplingParams) -> LlamaSampler {
    let mut chain = Vec::new();
    if p.top_k > 0 {
        chain.push(LlamaSampler::top_k(p.top_k as i32));
    }
    let top_p = p.top_p.unwrap_or(DEFAULT_TOP_P);
    if top_p < 1.0 {
        chain.push(LlamaSampler::top_p(top_p, 1));
    }
    chain.push(LlamaSampler::temp(p.temperature));
    let seed = p.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    });
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equal_best() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), LlamaToken::new(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, -3.0]), LlamaToken::new(1));
        assert_eq!(argmax(&[f32::NAN, -3.0]), LlamaToken::new(1));
    }

    #[test]
    fn a_root_rule_is_found_only_where_one_is_defined() {
        assert!(defines_root("root ::= \"yes\" | \"no\"\n"));
        assert!(defines_root("# answer\n  root::= [a-z]+"));
        assert!(!defines_root("rooted ::= \"x\""));
        assert!(!defines_root("answer ::= root"));
    }

    #[test]
    fn the_parsers_reason_names_where_it_stopped() {
        let printed =
            "parse: error parsing grammar: expecting ::= at = \"x\"\nanswer\n\nroot = \"x\"\n";
        assert_eq!(
            parse_error(printed).as_deref(),
            Some("expecting ::= at `= \"x\"`")
        );
        let printed = "parse: error parsing grammar: expecting '<' at \n!\n\nroot ::= !\n";
        assert_eq!(
            parse_error(printed).as_deref(),
            Some("expecting '<' at `!`")
        );
        let printed =
            "parse: error parsing grammar: Undefined rule identifier 'answer'\n\nroot ::= answer\n";
        assert_eq!(
            parse_error(printed).as_deref(),
            Some("Undefined rule identifier 'answer'")
        );
        assert_eq!(parse_error("something else"), None);
        let long = format!(
            "error parsing grammar: expecting name at {}",
            "x".repeat(200)
        );
        assert!(parse_error(&long).unwrap().ends_with("…`"));
    }

    #[test]
    fn a_schema_that_is_no_object_is_refused_before_the_converter() {
        let why = schema_grammar(&serde_json::json!([1, 2])).unwrap_err();
        assert!(why.contains("not a JSON object"), "{why}");
    }

    #[test]
    fn the_converter_turns_a_schema_into_a_root_rule() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"mood": {"enum": ["happy", "sad"]}},
            "required": ["mood"]
        });
        let gbnf = schema_grammar(&schema).unwrap();
        assert!(defines_root(&gbnf), "{gbnf}");
        assert!(schema_grammar(&serde_json::json!({"$ref": "#/$defs/missing"})).is_err());
    }
}
