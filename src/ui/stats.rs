//! The stats line after a reply: one format for `run --stats` and the chat shell.

use crate::domain::{Completion, EngineDescription, FlashAttention, KvCacheType};

/// Tokens, decode and prefill speed, time to first token, how it ended and where it ran.
/// Figures that do not exist for this reply (no token came, so there is no first-token time or
/// decode speed) are left out rather than shown as zeros.
pub fn stats_line(done: &Completion, engine: Option<&EngineDescription>) -> String {
    let u = &done.usage;
    let t = &done.timings;
    let mut parts = vec![count(u.completion_tokens, "token")];
    if u.completion_tokens >= 2 && t.decode_tokens_per_s > 0.0 {
        parts.push(format!("{:.1} tok/s decode", t.decode_tokens_per_s));
    }
    if u.prompt_tokens > 0 {
        let mut prompt = format!(
            "prompt {} ({} cached)",
            count(u.prompt_tokens, "token"),
            u.cached_tokens
        );
        if t.prefill_tokens_per_s > 0.0 {
            prompt.push_str(&format!(", {:.0} tok/s prefill", t.prefill_tokens_per_s));
        }
        parts.push(prompt);
    }
    if u.completion_tokens > 0 && t.ttft_ms > 0.0 {
        parts.push(format!("first token {:.0} ms", t.ttft_ms));
    }
    if t.total_ms > 0.0 {
        parts.push(format!("total {:.0} ms", t.total_ms));
    }
    parts.push(format!("finish {}", done.finish_reason));
    if let Some(d) = engine {
        let mut settings = vec![count(d.threads, "thread")];
        // The KV cache settings are named when they are not llama.cpp's defaults (f16, auto):
        // whoever changed them sees that they took.
        if let Some(kv) = d.kv_cache_type.filter(|t| *t != KvCacheType::default()) {
            settings.push(format!("KV cache {kv}"));
        }
        if let Some(fa) = d
            .flash_attention
            .filter(|f| *f != FlashAttention::default())
        {
            settings.push(format!("flash attention {fa}"));
        }
        parts.push(format!(
            "{} on {} ({}), loaded in {} ms",
            d.engine,
            d.backend,
            settings.join(", "),
            d.load_ms
        ));
        if let Some(f) = &d.fallback {
            parts.push(format!("fallback: {f}"));
        }
    }
    parts.join(" · ")
}

fn count(n: u32, what: &str) -> String {
    super::text::count(n as usize, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FinishReason, Timings, Usage};

    #[test]
    fn a_reply_stopped_before_its_first_token_shows_no_rates() {
        let done = Completion::cancelled_before_start();
        let line = stats_line(&done, None);
        assert_eq!(line, "0 tokens · finish cancelled");
    }

    #[test]
    fn counts_are_singular_or_plural_and_rates_shown_when_measured() {
        let done = Completion {
            finish_reason: FinishReason::Length,
            usage: Usage {
                prompt_tokens: 1,
                cached_tokens: 0,
                completion_tokens: 12,
            },
            timings: Timings {
                queue_ms: 0.0,
                ttft_ms: 180.4,
                prefill_tokens_per_s: 310.0,
                decode_tokens_per_s: 41.26,
                total_ms: 450.0,
            },
        };
        assert_eq!(
            stats_line(&done, None),
            "12 tokens · 41.3 tok/s decode · prompt 1 token (0 cached), 310 tok/s prefill · first token 180 ms · total 450 ms · finish length"
        );
    }
}
