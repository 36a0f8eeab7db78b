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

/// The index of the largest logit (the first one on ties, as llama.cpp's greedy sampler; NaN is
/// never chosen over a number).
///
/// Two passes rather than one: a single loop that carries the best value and its index from one
/// logit to the next is a chain of dependent compares that the compiler cannot vectorise, and
/// over Gemma's 262,144 logits it took 0.5-1.7 ms per token here, a few per cent of a decode
/// step, paid once per sequence in a batch. The largest value is first found in
/// [`ARGMAX_LANES`] independent lanes (SIMD max instructions), then its first position by a
/// plain search: about 70x faster on 262,144 logits (docs/benchmarks.md, "Greedy argmax").
fn argmax(logits: &[f32]) -> LlamaToken {
    let mut lanes = [f32::NEG_INFINITY; ARGMAX_LANES];
    let chunks = logits.chunks_exact(ARGMAX_LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &l) in lanes.iter_mut().zip(chunk) {
            // Written as a select, not f32::max: NaN must lose, and the select vectorises.
            *lane = if l > *lane { l } else { *lane };
        }
    }
    let mut best = f32::NEG_INFINITY;
    for &l in lanes.iter().chain(rest) {
        if l > best {
            best = l;
        }
    }
    // No logit above -inf (all -inf or NaN): index 0, as the single loop gave.
    let at = if best == f32::NEG_INFINITY {
        0
    } else {
        logits.iter().position(|&l| l == best).unwrap_or(0)
    };
    LlamaToken::new(at as i32)
}

/// Independent running maxima in [`argmax`]'s first pass: two AVX registers, or four SSE ones.
const ARGMAX_LANES: usize = 16;

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
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), LlamaToken::new(0));
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), LlamaToken::new(0));
        assert_eq!(argmax(&[]), LlamaToken::new(0));
    }

    /// The single loop argmax used to be: the reference the two-pass one must agree with.
    fn argmax_reference(logits: &[f32]) -> LlamaToken {
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

    #[test]
    fn argmax_agrees_with_the_single_loop_at_every_length_and_position() {
        // Lengths around the lane count (the remainder path) and a vocabulary's size; the best
        // value in every lane, in the remainder, repeated (first one wins), next to NaN and -inf.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state % 2001) as f32 - 1000.0) / 100.0
        };
        for len in (1..=40).chain([262_144 + 7]) {
            let base: Vec<f32> = (0..len).map(|_| next()).collect();
            assert_eq!(argmax(&base), argmax_reference(&base), "len {len}");
            for at in [0, len / 2, len - 1] {
                let mut v = base.clone();
                v[at] = 100.0;
                assert_eq!(argmax(&v), LlamaToken::new(at as i32), "len {len} at {at}");
                v[len - 1 - at / 2] = 100.0;
                assert_eq!(argmax(&v), argmax_reference(&v), "len {len} tie");
                v[at] = f32::NAN;
                assert_eq!(argmax(&v), argmax_reference(&v), "len {len} NaN");
                v[0] = f32::NEG_INFINITY;
                assert_eq!(argmax(&v), argmax_reference(&v), "len {len} -inf");
            }
        }
    }

    /// The default model in the shared download cache (`scripts/test.sh` pulls it first).
    fn default_model() -> std::path::PathBuf {
        let cache = std::env::var_os("GEMMACTL_CACHE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(|d| std::path::PathBuf::from(d).join("gemmactl"))
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| std::path::PathBuf::from(h).join(".cache").join("gemmactl"))
            })
            .expect("HOME is set");
        let path = cache.join("models").join("gemma-3-270m-q4_k_m.gguf");
        assert!(
            path.is_file(),
            "{} is missing: run `gemmactl models pull gemma3-270m` (scripts/test.sh does)",
            path.display()
        );
        path
    }

    /// The greedy fast path (argmax over the logits in place) chooses exactly the token
    /// llama.cpp's own greedy sampler chooses, step after step of a real reply of the real model.
    #[test]
    fn greedy_fast_path_follows_llama_cpps_greedy_sampler_on_the_real_model() {
        use engine_protocol::{Message, PromptFormat, Role};
        use llama_cpp_2::context::params::LlamaContextParams;
        use llama_cpp_2::llama_backend::LlamaBackend;
        use llama_cpp_2::llama_batch::LlamaBatch;
        use llama_cpp_2::model::params::LlamaModelParams;

        let mut backend = LlamaBackend::init().unwrap();
        backend.void_logs();
        let model =
            LlamaModel::load_from_file(&backend, default_model(), &LlamaModelParams::default())
                .unwrap();
        let params = LlamaContextParams::default()
            .with_n_ctx(std::num::NonZeroU32::new(256))
            .with_n_threads(2)
            .with_n_threads_batch(2);
        let mut ctx = model.new_context(&backend, params).unwrap();
        let messages = [Message::text(
            Role::User,
            "The history of the city begins with a small fishing village",
        )];
        let prompt = crate::prompt::tokens(&model, &messages, &PromptFormat::Completion).unwrap();
        let mut batch = LlamaBatch::new(256, 1);
        let last = prompt.len() - 1;
        for (i, t) in prompt.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == last).unwrap();
        }
        ctx.decode(&mut batch).unwrap();
        let greedy = SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        };
        let mut fast = TokenSampler::new(&model, &greedy).unwrap();
        assert!(
            fast.chain.is_none(),
            "temperature 0 must take the fast path"
        );
        let mut reference = LlamaSampler::greedy();
        let mut row = batch.n_tokens() - 1;
        for (step, pos) in (0..48).zip(prompt.len() as i32..) {
            let ours = fast.sample(&ctx, row).unwrap();
            let theirs = reference.sample(&ctx, row);
            assert_eq!(ours, theirs, "step {step}");
            batch.clear();
            batch.add(ours, pos, &[0], true).unwrap();
            ctx.decode(&mut batch).unwrap();
            row = 0;
        }
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
