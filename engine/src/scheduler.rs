//! The decode loop: continuous batching of every request in flight through one llama.cpp context.
//!
//! Each request gets a sequence slot. Each step builds one batch holding the next token of every
//! decoding request plus a chunk of every prompt still being read, decodes it, samples, and emits
//! tokens. Commands are read between steps, so a cancel lands within one step (one decode, or one
//! prompt chunk of at most `PREFILL_CHUNK` tokens). A slot keeps its tokens and KV cache after its
//! request ends when the request named a session; the next request of that session reuses the
//! longest common prefix.

mod images;

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;

use crate::loader::BATCH_TOKENS;
use crate::output::{emit, emit_error};
use crate::prompt;
use crate::sampling::TokenSampler;
use crate::text::{Step, TextStream};
use crate::vision::Vision;
use engine_protocol::{
    Command, DoneInfo, ErrorCode, Event, FinishReason, GenerateCommand, SamplingParams, Timings,
    Usage,
};
use images::{CachedImage, ImageSpan};

/// Prompt tokens of one request per step. Bounds cancel latency during a long prompt (~0.4 s at
/// 2-core prefill speed) and leaves room in the batch for other requests' decode steps.
const PREFILL_CHUNK: usize = 128;

/// What the stdin reader hands the loop.
pub(crate) enum Inbox {
    Command(Command),
    Malformed(String),
    /// stdin closed: the supervisor is gone, so the engine exits.
    Closed,
}

struct Slot {
    seq: i32,
    /// Exactly the tokens whose keys and values are in this sequence's cache, in order.
    cached: Vec<LlamaToken>,
    session: Option<String>,
    busy: bool,
    last_used: Instant,
    /// The images whose spans are in `cached`, so a reused prefix is checked image by image.
    images: Vec<CachedImage>,
}

struct Active {
    id: String,
    slot: usize,
    prompt: Vec<LlamaToken>,
    /// The prompt's images, in order: spans of `prompt` read by the vision encoder, not as text.
    images: Vec<ImageSpan>,
    /// Prompt tokens already in the cache (reused or read).
    prompt_done: usize,
    reused: usize,
    sampler: TokenSampler,
    /// Sampled and sent, not yet decoded.
    next_token: Option<LlamaToken>,
    generated: u32,
    max_tokens: u32,
    text: TextStream,
    arrived: Instant,
    started: Instant,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    /// Batch row whose logits sample this request's next token, set while building a batch.
    logits_row: Option<i32>,
    /// A prompt chunk of this request is in the batch being decoded: report progress after it.
    read_chunk: bool,
    cancelled: bool,
}

struct Queued {
    command: GenerateCommand,
    /// Built on arrival, so a grammar that cannot be used is refused at once, not when a slot
    /// frees up.
    sampler: TokenSampler,
    arrived: Instant,
}

pub(crate) struct Scheduler {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    slots: Vec<Slot>,
    active: Vec<Active>,
    queue: VecDeque<Queued>,
    context: u32,
    sliding_window: u32,
    batch: LlamaBatch<'static>,
    /// The vision projector (`--mmproj`), if one is loaded.
    vision: Option<Vision>,
}

impl Scheduler {
    pub(crate) fn new(
        model: &'static LlamaModel,
        ctx: LlamaContext<'static>,
        parallel: u32,
        context: u32,
        sliding_window: u32,
        vision: Option<Vision>,
    ) -> Scheduler {
        let now = Instant::now();
        let slots = (0..parallel as i32)
            .map(|seq| Slot {
                seq,
                cached: Vec::new(),
                session: None,
                busy: false,
                last_used: now,
                images: Vec::new(),
            })
            .collect();
        Scheduler {
            model,
            ctx,
            slots,
            active: Vec::new(),
            queue: VecDeque::new(),
            context,
            sliding_window,
            batch: LlamaBatch::new(BATCH_TOKENS as usize, 1),
            vision,
        }
    }

    /// Runs until stdin closes or a `shutdown` arrives.
    pub(crate) fn run(&mut self, inbox: Receiver<Inbox>) {
        loop {
            // Idle: block for the next command. Busy: take whatever has arrived, then step.
            let first = if self.active.is_empty() && self.queue.is_empty() {
                match inbox.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                }
            } else {
                match inbox.recv_timeout(Duration::ZERO) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut pending = first.into_iter().collect::<Vec<_>>();
            pending.extend(inbox.try_iter());
            for message in pending {
                match message {
                    Inbox::Command(Command::Generate(g)) => self.accept(g),
                    Inbox::Command(Command::Cancel { id }) => self.cancel(&id),
                    Inbox::Command(Command::DropSession { session }) => self.drop_session(&session),
                    Inbox::Command(Command::Shutdown) | Inbox::Closed => {
                        self.cancel_everything();
                        return;
                    }
                    Inbox::Malformed(why) => emit_error(None, ErrorCode::BadCommand, why, None),
                }
            }
            self.finish_cancelled();
            self.admit();
            if !self.active.is_empty() {
                self.step();
            }
        }
    }

    fn accept(&mut self, command: GenerateCommand) {
        let id = command.id.clone();
        let in_use =
            self.active.iter().any(|a| a.id == id) || self.queue.iter().any(|q| q.command.id == id);
        if id.is_empty() || in_use {
            let why = if id.is_empty() {
                "a generate command needs a non-empty id".to_string()
            } else {
                format!("request id {id:?} is already in flight: use a fresh id")
            };
            emit_error(Some(&id), ErrorCode::BadRequest, why, None);
            return;
        }
        if let Err(why) = check_params(&command.params) {
            emit_error(Some(&id), ErrorCode::BadRequest, why, None);
            return;
        }
        // Images are read only where a vision projector is loaded; never dropped in silence.
        if self.vision.is_none() && command.messages.iter().any(|m| !m.images.is_empty()) {
            let why = "this engine has no vision projector loaded, so it cannot see images: start it with --mmproj PROJECTOR.gguf".to_string();
            return emit_error(Some(&id), ErrorCode::NoVision, why, None);
        }
        let sampler = match TokenSampler::new(self.model, &command.params) {
            Ok(s) => s,
            Err(why) => return emit_error(Some(&id), ErrorCode::BadRequest, why, None),
        };
        self.queue.push_back(Queued {
            command,
            sampler,
            arrived: Instant::now(),
        });
    }

    fn cancel(&mut self, id: &str) {
        if let Some(queued) = self
            .queue
            .iter()
            .position(|q| q.command.id == id)
            .and_then(|pos| self.queue.remove(pos))
        {
            let waited = ms(queued.arrived.elapsed());
            emit(&Event::Done(DoneInfo {
                id: id.to_string(),
                finish_reason: FinishReason::Cancelled,
                usage: Usage::default(),
                timings: Timings {
                    queue_ms: waited,
                    total_ms: waited,
                    ..Timings::default()
                },
            }));
        } else if let Some(active) = self.active.iter_mut().find(|a| a.id == id) {
            active.cancelled = true;
        } else {
            emit_error(
                Some(id),
                ErrorCode::UnknownRequest,
                format!("no request {id:?} is in flight (it may have finished already)"),
                None,
            );
        }
    }

    fn drop_session(&mut self, session: &str) {
        for i in 0..self.slots.len() {
            if self.slots[i].session.as_deref() == Some(session) {
                self.slots[i].session = None;
                if !self.slots[i].busy {
                    self.clear_slot(i);
                }
            }
        }
    }

    fn cancel_everything(&mut self) {
        let ids: Vec<String> = self.queue.iter().map(|q| q.command.id.clone()).collect();
        for id in ids {
            self.cancel(&id);
        }
        for a in &mut self.active {
            a.cancelled = true;
        }
        self.finish_cancelled();
    }

    fn finish_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].cancelled {
                let a = self.active.remove(i);
                self.finish(a, FinishReason::Cancelled);
            } else {
                i += 1;
            }
        }
    }

    /// Moves queued requests into free slots, reusing a session's cache where one exists.
    fn admit(&mut self) {
        while let Some(next) = self.queue.front() {
            let session = next.command.session.clone();
            let Some(slot) = self.pick_slot(session.as_deref()) else {
                return;
            };
            let Some(queued) = self.queue.pop_front() else {
                return;
            };
            self.start(queued, slot);
        }
    }

    fn pick_slot(&self, session: Option<&str>) -> Option<usize> {
        if let Some(s) = session {
            if let Some(i) = self
                .slots
                .iter()
                .position(|slot| slot.session.as_deref() == Some(s))
            {
                // A session's previous request is still running: wait for it rather than
                // read the conversation twice.
                return if self.slots[i].busy { None } else { Some(i) };
            }
        }
        // Otherwise an empty slot, else the least recently used idle one.
        let free = self.slots.iter().enumerate().filter(|(_, s)| !s.busy);
        free.min_by_key(|(_, s)| (s.session.is_some() || !s.cached.is_empty(), s.last_used))
            .map(|(i, _)| i)
    }

    fn start(&mut self, queued: Queued, slot: usize) {
        let Queued {
            command,
            sampler,
            arrived,
        } = queued;
        let id = command.id.clone();
        let (prompt, images) = if command.messages.iter().all(|m| m.images.is_empty()) {
            match prompt::tokens(self.model, &command.messages, &command.prompt) {
                Ok(tokens) => (tokens, Vec::new()),
                Err(why) => return emit_error(Some(&id), ErrorCode::BadRequest, why, None),
            }
        } else {
            match self.prompt_with_images(&command) {
                Ok(built) => built,
                Err(fault) => return emit_error(Some(&id), fault.code, fault.message, None),
            }
        };
        let max_tokens = command.params.max_tokens.unwrap_or(u32::MAX);
        if prompt.len() as u64 + 1 > self.context as u64 {
            let msg = format!(
                "the conversation is {} tokens, more than the {}-token context: shorten it or raise the context (--context)",
                prompt.len(),
                self.context
            );
            return emit_error(Some(&id), ErrorCode::ContextOverflow, msg, None);
        }
        if self.slots[slot].session.as_deref() != command.session.as_deref() {
            self.clear_slot(slot);
        }
        let reused = self.reuse_prefix(slot, &prompt, &images);
        let s = &mut self.slots[slot];
        s.session = command.session.clone();
        s.busy = true;
        s.last_used = Instant::now();
        self.active.push(Active {
            id,
            slot,
            prompt_done: reused,
            reused,
            prompt,
            images,
            sampler,
            next_token: None,
            generated: 0,
            max_tokens,
            text: TextStream::new(command.params.stop.clone()),
            arrived,
            started: Instant::now(),
            first_token_at: None,
            last_token_at: None,
            logits_row: None,
            read_chunk: false,
            cancelled: false,
        });
    }

    /// Keeps the longest common prefix of the slot's cache and the new prompt; returns its length.
    fn reuse_prefix(&mut self, slot: usize, prompt: &[LlamaToken], images: &[ImageSpan]) -> usize {
        let cached = &self.slots[slot].cached;
        let mut common = cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token must be decoded again to get logits for the first reply token.
        common = common.min(prompt.len() - 1);
        // An image is reused whole or not at all, and only if it is the same picture.
        common = self.align_to_images(slot, common, images);
        if common == 0 {
            self.clear_slot(slot);
            return 0;
        }
        if common < self.slots[slot].cached.len() {
            let seq = self.slots[slot].seq;
            let cut = self
                .ctx
                .clear_kv_cache_seq(Some(seq as u32), Some(common as u32), None);
            // With sliding-window layers the cut always "succeeds" even when it removed keys the
            // window still needs; verify the cache still reaches back far enough, else re-read.
            let pos_min = self.ctx.kv_cache_seq_pos_min(seq);
            let needed_from = common.saturating_sub(self.sliding_window as usize) as i32;
            let window_ok = if self.sliding_window > 0 {
                pos_min >= 0 && pos_min <= needed_from
            } else {
                pos_min == 0
            };
            if !matches!(cut, Ok(true)) || !window_ok {
                self.clear_slot(slot);
                return 0;
            }
            self.slots[slot].cached.truncate(common);
            self.slots[slot].images.retain(|i| i.end() <= common);
        }
        common
    }

    fn clear_slot(&mut self, slot: usize) {
        let seq = self.slots[slot].seq as u32;
        let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
        self.slots[slot].cached.clear();
        self.slots[slot].images.clear();
    }

    /// One decode step for every active request.
    fn step(&mut self) {
        // Images are read on their own, before the batch: an image is embeddings, not tokens.
        if self.vision.is_some() && self.active.iter().any(|a| !a.images.is_empty()) {
            self.read_images();
        }
        self.batch.clear();
        let mut room = BATCH_TOKENS as usize;
        // Decode steps first: one token each, so running replies never stall behind prompts.
        for a in &mut self.active {
            a.logits_row = None;
            a.read_chunk = false;
            if let Some(token) = a.next_token {
                let slot = &mut self.slots[a.slot];
                let pos = slot.cached.len() as i32;
                // `room` starts at the batch's capacity and every token placed takes one.
                if self.batch.add(token, pos, &[slot.seq], true).is_err() {
                    break;
                }
                a.logits_row = Some(self.batch.n_tokens() - 1);
                slot.cached.push(token);
                room -= 1;
            }
        }
        for a in &mut self.active {
            if a.next_token.is_some() || room == 0 {
                continue;
            }
            let mut take = (a.prompt.len() - a.prompt_done)
                .min(PREFILL_CHUNK)
                .min(room);
            // Text stops at the next image, which `read_images` reads in a later step.
            if let Some(next) = a.images.iter().find(|i| i.start >= a.prompt_done) {
                take = take.min(next.start - a.prompt_done);
            }
            let slot = &mut self.slots[a.slot];
            for k in 0..take {
                let index = a.prompt_done + k;
                let last = index + 1 == a.prompt.len();
                if self
                    .batch
                    .add(a.prompt[index], index as i32, &[slot.seq], last)
                    .is_err()
                {
                    break;
                }
                if last {
                    a.logits_row = Some(self.batch.n_tokens() - 1);
                }
            }
            slot.cached
                .extend_from_slice(&a.prompt[a.prompt_done..a.prompt_done + take]);
            a.prompt_done += take;
            a.read_chunk = take > 0;
            room -= take;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        let mut result = self.ctx.decode(&mut self.batch);
        if result == Err(DecodeError::NoKvCacheSlot) && self.evict_idle_caches() {
            result = self.ctx.decode(&mut self.batch);
        }
        if let Err(e) = result {
            self.decode_failed(e);
            return;
        }
        for a in self.active.iter().filter(|a| a.read_chunk) {
            emit(&Event::Progress {
                id: a.id.clone(),
                done: a.prompt_done as u32,
                total: a.prompt.len() as u32,
            });
        }
        let now = Instant::now();
        let vocab = self.model.vocab();
        // Requests that end in this step, with their reason; `None` is a grammar that allows no
        // next token.
        let mut finished = Vec::new();
        for (i, a) in self.active.iter_mut().enumerate() {
            let Some(row) = a.logits_row else { continue };
            let Ok(token) = a.sampler.sample(&self.ctx, row) else {
                finished.push((i, None));
                continue;
            };
            a.next_token = None;
            if a.first_token_at.is_none() {
                a.first_token_at = Some(now);
            }
            if vocab.is_eog(token) {
                finished.push((i, Some(FinishReason::Stop)));
                continue;
            }
            a.generated += 1;
            a.last_token_at = Some(now);
            let piece = vocab.token_to_piece(token, false, None);
            match a.text.push(&piece) {
                Step::Emit(text) => send_text(&a.id, text),
                Step::Stopped(text) => {
                    send_text(&a.id, text);
                    finished.push((i, Some(FinishReason::Stop)));
                    continue;
                }
            }
            let context_full = self.slots[a.slot].cached.len() + 1 >= self.context as usize;
            if a.generated >= a.max_tokens {
                finished.push((i, Some(FinishReason::Length)));
            } else if context_full {
                // Not the caller's limit: the reply was cut because the context has no room
                // for another token, which a caller must be able to tell from `length`.
                finished.push((i, Some(FinishReason::Context)));
            } else {
                a.next_token = Some(token);
            }
        }
        for (i, reason) in finished.into_iter().rev() {
            let a = self.active.remove(i);
            match reason {
                Some(reason) => self.finish(a, reason),
                None => {
                    let why = format!(
                        "the grammar allows no next token after {} generated tokens, so the reply can neither go on nor end: make every rule of the grammar completable",
                        a.generated
                    );
                    emit_error(Some(&a.id), ErrorCode::BadRequest, why, None);
                    self.release(a.slot, false);
                }
            }
        }
    }

    /// Frees the caches of idle sessions; says whether there was anything to free.
    fn evict_idle_caches(&mut self) -> bool {
        let mut freed = false;
        for i in 0..self.slots.len() {
            if !self.slots[i].busy && !self.slots[i].cached.is_empty() {
                self.slots[i].session = None;
                self.clear_slot(i);
                freed = true;
            }
        }
        freed
    }

    /// A failed decode leaves the requests in this batch unusable; end them with the reason.
    fn decode_failed(&mut self, e: DecodeError) {
        let (code, why) = match e {
            DecodeError::NoKvCacheSlot => (
                ErrorCode::ContextOverflow,
                format!("the {}-token context is full with the requests in flight: raise the context (--context) or send fewer requests at once", self.context),
            ),
            other => (ErrorCode::DecodeFailed, format!("llama.cpp failed to decode a batch ({other})")),
        };
        for a in std::mem::take(&mut self.active) {
            emit_error(Some(&a.id), code, why.clone(), None);
            self.release(a.slot, false);
        }
    }

    fn finish(&mut self, mut a: Active, reason: FinishReason) {
        let rest = a.text.finish();
        if reason != FinishReason::Stop || !rest.is_empty() {
            send_text(&a.id, rest);
        }
        let end = Instant::now();
        let prefill_end = a.first_token_at.unwrap_or(end);
        let read = a.prompt_done.saturating_sub(a.reused);
        let prefill_secs = prefill_end.duration_since(a.started).as_secs_f64();
        let decode_secs = match (a.first_token_at, a.last_token_at) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let timings = Timings {
            queue_ms: ms(a.started.duration_since(a.arrived)),
            ttft_ms: a
                .first_token_at
                .map(|t| ms(t.duration_since(a.arrived)))
                .unwrap_or(0.0),
            prefill_tokens_per_s: if prefill_secs > 0.0 && a.first_token_at.is_some() {
                read as f64 / prefill_secs
            } else {
                0.0
            },
            decode_tokens_per_s: if decode_secs > 0.0 {
                (a.generated.saturating_sub(1)) as f64 / decode_secs
            } else {
                0.0
            },
            total_ms: ms(end.duration_since(a.arrived)),
        };
        emit(&Event::Done(DoneInfo {
            id: a.id.clone(),
            finish_reason: reason,
            usage: Usage {
                prompt_tokens: a.prompt.len() as u32,
                cached_tokens: a.reused as u32,
                completion_tokens: a.generated,
                image_tokens: a.images.iter().map(|i| i.len as u32).sum(),
            },
            timings,
        }));
        let keep = self.slots[a.slot].session.is_some();
        self.release(a.slot, keep);
    }

    fn release(&mut self, slot: usize, keep_cache: bool) {
        self.slots[slot].busy = false;
        self.slots[slot].last_used = Instant::now();
        if !keep_cache {
            self.slots[slot].session = None;
            self.clear_slot(slot);
        }
    }
}

fn send_text(id: &str, text: String) {
    if !text.is_empty() {
        emit(&Event::Token {
            id: id.to_string(),
            text,
        });
    }
}

fn check_params(p: &SamplingParams) -> Result<(), String> {
    if !(p.temperature.is_finite() && p.temperature >= 0.0) {
        return Err(format!(
            "temperature {} is not valid: use a number ≥ 0 (0 = greedy)",
            p.temperature
        ));
    }
    if let Some(top_p) = p
        .top_p
        .filter(|t| !(t.is_finite() && *t > 0.0 && *t <= 1.0))
    {
        return Err(format!(
            "top_p {top_p} is not valid: use a number in (0, 1]"
        ));
    }
    if p.max_tokens == Some(0) {
        return Err("max_tokens 0 asks for nothing: use at least 1".into());
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
