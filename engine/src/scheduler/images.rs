//! The scheduler's side of images: building a prompt with image spans, reading a span with the
//! vision encoder when the prompt reaches it, and keeping a session's cached images only where
//! the next prompt has the very same picture at the very same place.

use llama_cpp_2::mtmd::MtmdInputChunks;
use llama_cpp_2::token::LlamaToken;

use super::Scheduler;
use crate::output::{emit, emit_error};
use crate::prompt;
use crate::vision::{is_placeholder, ImageFault};
use engine_protocol::{ErrorCode, Event, GenerateCommand, ImageSource};

/// An image of a request's prompt.
pub(super) struct ImageSpan {
    /// Index of the span's first token in the prompt.
    pub start: usize,
    /// Tokens of the span (markers and embeddings): what the image takes in the context, and
    /// what `usage.image_tokens` counts.
    pub len: usize,
    /// SHA-256 of the image file, hex.
    pub hash: String,
    chunks: MtmdInputChunks,
}

impl ImageSpan {
    fn end(&self) -> usize {
        self.start + self.len
    }
}

/// An image whose span is in a slot's cache.
pub(super) struct CachedImage {
    start: usize,
    len: usize,
    hash: String,
}

impl CachedImage {
    pub(super) fn end(&self) -> usize {
        self.start + self.len
    }
}

impl Scheduler {
    /// The prompt of a request with images: tokens, with each image's span in place.
    pub(super) fn prompt_with_images(
        &self,
        command: &GenerateCommand,
    ) -> Result<(Vec<LlamaToken>, Vec<ImageSpan>), ImageFault> {
        let Some(vision) = self.vision.as_ref() else {
            return Err(ImageFault {
                code: ErrorCode::NoVision,
                message: "this engine has no vision projector loaded, so it cannot see images: start it with --mmproj PROJECTOR.gguf".into(),
            });
        };
        let sources: Vec<&ImageSource> = command
            .messages
            .iter()
            .flat_map(|m| m.images.iter().map(|p| &p.image))
            .collect();
        let mut spans = Vec::new();
        let tokens = prompt::tokens_with_images(
            self.model,
            &command.messages,
            &command.prompt,
            |k, tokens: &mut Vec<LlamaToken>| {
                let source = sources.get(k).ok_or_else(|| {
                    ImageFault::from(format!(
                        "the prompt refers to image {} of {}",
                        k + 1,
                        sources.len()
                    ))
                })?;
                let prepared = vision.prepare(source, k)?;
                spans.push(ImageSpan {
                    start: tokens.len(),
                    len: prepared.tokens.len(),
                    hash: prepared.hash,
                    chunks: prepared.chunks,
                });
                tokens.extend_from_slice(&prepared.tokens);
                Ok::<(), ImageFault>(())
            },
        )?;
        // The reply's first token is sampled from the last prompt token's logits, which only a
        // text token can give (Gemma 3's images always end with `<end_of_image>`).
        if tokens.last().is_some_and(|t| is_placeholder(*t)) {
            return Err(ImageFault::from(
                "the prompt ends with an image, which this projector cannot end a prompt with: add text after the image".to_string(),
            ));
        }
        Ok((tokens, spans))
    }

    /// Shortens a reusable prefix of `common` tokens so that every image in it is whole and is
    /// the same picture (by hash) as the one cached at that place.
    pub(super) fn align_to_images(
        &self,
        slot: usize,
        mut common: usize,
        images: &[ImageSpan],
    ) -> usize {
        let cached = &self.slots[slot].images;
        for span in images {
            if span.start >= common {
                break;
            }
            let same = cached
                .iter()
                .any(|c| c.start == span.start && c.len == span.len && c.hash == span.hash);
            if !same || span.end() > common {
                common = span.start;
                break;
            }
        }
        // A cached image the prefix would cut in two cannot be kept either.
        for c in cached {
            if c.start < common && c.end() > common {
                common = c.start;
            }
        }
        common
    }

    /// Reads, for every request whose prompt has reached an image, that image: encoded by the
    /// projector and decoded into the request's sequence. Blocking: other requests wait for it
    /// (milliseconds with a small projector, about a second per image for Gemma 3's encoder on
    /// a CPU), and a cancel lands after it.
    pub(super) fn read_images(&mut self) {
        let mut failed = Vec::new();
        for i in 0..self.active.len() {
            let a = &mut self.active[i];
            if a.next_token.is_some() || a.cancelled {
                continue;
            }
            let Some(span) = a.images.iter().find(|s| s.start == a.prompt_done) else {
                continue;
            };
            let Some(vision) = self.vision.as_mut() else {
                return;
            };
            let slot = &mut self.slots[a.slot];
            if let Err(why) = vision.eval(&span.chunks, &mut self.ctx, slot.seq, span.start) {
                failed.push((i, why));
                continue;
            }
            slot.cached
                .extend_from_slice(&a.prompt[span.start..span.end()]);
            slot.images.push(CachedImage {
                start: span.start,
                len: span.len,
                hash: span.hash.clone(),
            });
            a.prompt_done = span.end();
            if a.prompt_done == a.prompt.len() {
                // The image's decode gave no logits for the prompt's last token, which the
                // reply's first token needs: take that (text) token out and read it again.
                let last = a.prompt_done - 1;
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), Some(last as u32), None);
                slot.cached.truncate(last);
                a.prompt_done = last;
            }
            emit(&Event::Progress {
                id: a.id.clone(),
                done: a.prompt_done as u32,
                total: a.prompt.len() as u32,
            });
        }
        for (i, why) in failed.into_iter().rev() {
            let a = self.active.remove(i);
            emit_error(Some(&a.id), ErrorCode::DecodeFailed, why, None);
            self.release(a.slot, false);
        }
    }
}
