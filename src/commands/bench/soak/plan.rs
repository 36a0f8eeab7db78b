//! The soak's requests, decided before it starts: which are cancelled and at which point, which
//! have their engine killed under them, how long each prompt is, how many tokens each may
//! generate, greedy or sampled, and whether it starts a conversation or continues one.
//!
//! The mix is fixed by the request's number (a seeded hash, so one `--requests N` always sends
//! the same requests and two runs compare like with like). Exactly one request in ten is
//! cancelled and one in a hundred has its engine killed, at fixed places, so the counts are
//! known in advance and the short run in the tests has both.

use serde::{Deserialize, Serialize};

/// Requests sent together, and the engine's decode slots: one wave fills every slot.
pub(in crate::commands::bench) const WAVE: usize = 4;

/// Most tokens a reply may be given: short replies, so 2,000 requests take minutes.
pub(in crate::commands::bench) const MAX_TOKENS: u32 = 16;

/// The seed of the mix.
pub(super) const SEED: u64 = 0x5eed_0019;

/// Prompt lengths in words (about 1.3 tokens each), from a question to a long paragraph.
const PROMPT_WORDS: [usize; 5] = [3, 8, 20, 50, 120];

/// Reply lengths in tokens.
const REPLY_TOKENS: [u32; 5] = [1, 2, 4, 8, MAX_TOKENS];

/// Tokens a cancelled or killed request may generate: more than it gets to, so the reply is
/// still running when it is stopped.
const LONG_REPLY: u32 = 256;

/// What is done to a request while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(in crate::commands::bench) enum Fate {
    /// Left to finish.
    Reply,
    /// Cancelled (as a front end does) once this many tokens have arrived; 0: at once, while
    /// it is still on its way to the engine.
    Cancel {
        /// Tokens received before the cancel.
        after_tokens: u32,
    },
    /// Its engine is killed (SIGKILL) once its first token has arrived.
    Kill,
}

/// One request of the soak.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Planned {
    /// Its number, from 1.
    pub number: usize,
    pub fate: Fate,
    /// Words of prose in the prompt.
    pub prompt_words: usize,
    pub max_tokens: u32,
    /// Greedy, or sampled at the default temperature.
    pub greedy: bool,
    /// A new conversation, or the next turn of the one its lane carries.
    pub new_conversation: bool,
}

impl Planned {
    /// The message sent: an instruction and `prompt_words` words of prose, different for
    /// every request.
    pub(super) fn prompt(&self) -> String {
        let ask = match self.fate {
            Fate::Reply => "Say in a few words what these notes are about.",
            Fate::Cancel { .. } | Fate::Kill => {
                "Write a long story, many paragraphs, that begins where these notes end."
            }
        };
        format!(
            "Notes {}: {} {ask}",
            self.number,
            prose(self.prompt_words, self.number)
        )
    }
}

/// The requests of a soak of `requests`.
pub(super) fn plan(requests: usize) -> Vec<Planned> {
    (0..requests)
        .map(|i| {
            let h = mix(SEED.wrapping_add(i as u64));
            let fate = if i % 100 == 50 {
                Fate::Kill
            } else if i % 10 == 5 {
                // At once, after the first token, a few tokens in: the three places a front end
                // cancels from (queue or prefill, first text shown, text streaming).
                let after_tokens = [0, 1, 4][(i / 10) % 3];
                Fate::Cancel { after_tokens }
            } else {
                Fate::Reply
            };
            let max_tokens = match fate {
                Fate::Reply => REPLY_TOKENS[(h % 5) as usize],
                Fate::Cancel { .. } | Fate::Kill => LONG_REPLY,
            };
            Planned {
                number: i + 1,
                fate,
                prompt_words: PROMPT_WORDS[((h >> 8) % 5) as usize],
                max_tokens,
                greedy: (h >> 16).is_multiple_of(2),
                new_conversation: !(h >> 24).is_multiple_of(3),
            }
        })
        .collect()
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `words` words of plain prose, starting at a place that depends on `start`.
fn prose(words: usize, start: usize) -> String {
    const TEXT: &str =
        "The harbour wakes before the town does. Fishing boats come in on the tide, \
        gulls follow them, and the market stalls open one by one along the quay. A baker carries \
        bread to the cafe on the corner, the ferry sounds its horn twice, and children run to \
        the school by the old lighthouse. By noon the square is full of visitors, the church \
        bell rings, and the smell of grilled fish drifts over the water while the boats are \
        washed and the nets are hung out to dry in the sun.";
    let all: Vec<&str> = TEXT.split_whitespace().collect();
    (0..words)
        .map(|k| all[(start * 7 + k) % all.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_ten_is_cancelled_and_one_in_a_hundred_killed() {
        let p = plan(2000);
        let count = |f: &dyn Fn(&Fate) -> bool| p.iter().filter(|r| f(&r.fate)).count();
        assert_eq!(count(&|f| matches!(f, Fate::Cancel { .. })), 200);
        assert_eq!(count(&|f| *f == Fate::Kill), 20);
        // Every cancel point is used.
        for at in [0, 1, 4] {
            assert!(p
                .iter()
                .any(|r| r.fate == Fate::Cancel { after_tokens: at }));
        }
        // The short run of the tests has both.
        let short = plan(60);
        assert_eq!(short.iter().filter(|r| r.fate == Fate::Kill).count(), 1);
        assert_eq!(
            short
                .iter()
                .filter(|r| matches!(r.fate, Fate::Cancel { .. }))
                .count(),
            6
        );
    }

    #[test]
    fn lengths_are_mixed_and_the_plan_is_the_same_every_time() {
        let p = plan(400);
        assert_eq!(p, plan(400));
        for words in PROMPT_WORDS {
            assert!(p.iter().any(|r| r.prompt_words == words), "{words} words");
        }
        for tokens in REPLY_TOKENS {
            assert!(
                p.iter()
                    .any(|r| r.fate == Fate::Reply && r.max_tokens == tokens),
                "{tokens} tokens"
            );
        }
        assert!(p.iter().any(|r| r.greedy) && p.iter().any(|r| !r.greedy));
        assert!(p.iter().any(|r| r.new_conversation) && p.iter().any(|r| !r.new_conversation));
        assert!(p.iter().all(|r| r.max_tokens <= LONG_REPLY));
    }

    #[test]
    fn prompts_differ_and_have_the_words_asked_for() {
        let p = plan(30);
        let prompts: std::collections::BTreeSet<String> = p.iter().map(|r| r.prompt()).collect();
        assert_eq!(prompts.len(), 30);
        assert_eq!(prose(120, 3).split_whitespace().count(), 120);
    }
}
