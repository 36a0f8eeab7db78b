//! One conversation being carried on, and the operations on it.
//!
//! The thread keeps the branch it continues (the messages from the root to the newest, with
//! their ids in the store when history is on) and sends it whole with every request: the engine's
//! session cache is only a cache. Oldest exchanges that no longer fit the context are left out
//! of requests (`dropped`), never deleted.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use super::request::{infill_parts, request_parts, PromptStyle, RequestParts};
use super::turn::Turn;
use super::TurnService;
use crate::domain::{
    EngineDescription, FinishReason, GenerateRequest, Image, Message, Origin, Role, SamplingParams,
};
use crate::models::ModelEntry;
use crate::store::{ConversationId, MessageId, ReplyEnd, StoreError};

/// Session names handed out in this process. Per process, not per thread: threads carried on
/// side by side (batch lines, MCP calls, HTTP requests) must never share a session, or the engine
/// would make each wait for the other's request to finish and reuse one's cache for another.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// A message on the thread's branch, with its id in the store when it is stored.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: Option<MessageId>,
    pub(super) message: Message,
    /// A user message the model refused as longer than the whole context: kept, and left out
    /// of every later request (sent again only when it is itself being answered, by a retry).
    pub(super) refused: bool,
}

impl Entry {
    fn new(id: Option<MessageId>, message: Message) -> Entry {
        Entry {
            id,
            message,
            refused: false,
        }
    }
}

/// Where `/fork` continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkPoint {
    /// Before the last user message: the next message starts a sibling branch.
    BeforeLastMessage,
    /// After a stored message.
    After(MessageId),
}

/// One conversation being carried on: its stored id, system prompt, the branch it continues,
/// the model and the sampling parameters.
pub struct Thread {
    pub(super) service: TurnService,
    id: Option<ConversationId>,
    system: Option<String>,
    pub(super) branch: Vec<Entry>,
    /// Oldest messages left out of requests because the conversation outgrew the context.
    pub(super) dropped: usize,
    model: ModelEntry,
    params: SamplingParams,
    style: PromptStyle,
    origin: Origin,
    /// Set for fill-in-the-middle requests: the code after the cursor.
    infill: Option<String>,
    session: String,
    /// Why the last write to the history failed (a full disk, a read-only database), until the
    /// next turn tells the user; the conversation goes on unsaved rather than stopping.
    pub(super) not_saved: Option<String>,
}

impl Thread {
    /// A new conversation (stored on its first message).
    pub fn new(
        service: &TurnService,
        model: ModelEntry,
        system: Option<String>,
        params: SamplingParams,
        style: PromptStyle,
    ) -> Thread {
        let mut thread = Thread {
            service: service.clone(),
            id: None,
            system: system.filter(|s| !s.trim().is_empty()),
            branch: Vec::new(),
            dropped: 0,
            model,
            params,
            style,
            origin: Origin::new(service.source()),
            infill: None,
            session: String::new(),
            not_saved: None,
        };
        thread.new_session();
        thread
    }

    /// Continues stored conversation `id` from its head. `system`, when given, replaces the
    /// stored system prompt for the turns to come.
    pub fn resume(&mut self, id: ConversationId, system: Option<String>) -> Result<()> {
        let (conv, path) = {
            let store = self
                .service
                .store()
                .context("history is off: drop --no-log (or turn history on in config.toml) to continue a stored conversation")?;
            let conv = store.conversation(id)?;
            let path = match conv.head {
                Some(head) => store.path_to(head)?,
                None => Vec::new(),
            };
            (conv, path)
        };
        self.branch = path
            .into_iter()
            .map(|m| Entry {
                id: Some(m.id),
                message: m.message(),
                refused: m.refused,
            })
            .collect();
        self.id = Some(conv.id);
        self.system = system.or(conv.system).filter(|s| !s.trim().is_empty());
        self.dropped = 0;
        self.new_session();
        Ok(())
    }

    /// Starts a new conversation from messages the caller already has (a batch line's, an
    /// HTTP request's): system messages first become the system prompt, then the user messages
    /// and replies are stored as they are, so the reply to the next [`Thread::send`] has them for
    /// context and `history show` shows them. A given reply is stored as finished with no engine
    /// or counts: no engine wrote it.
    pub fn seed(&mut self, messages: &[Message]) -> Result<()> {
        if !self.branch.is_empty() || self.id.is_some() {
            bail!("a conversation can only be seeded before its first message");
        }
        let leading = messages
            .iter()
            .take_while(|m| m.role == Role::System)
            .count();
        if let Some(late) = messages[leading..]
            .iter()
            .position(|m| m.role == Role::System)
        {
            bail!(
                "message {} is a system message after the conversation started: put system messages first",
                leading + late + 1
            );
        }
        if leading > 0 {
            let given: Vec<&str> = messages[..leading]
                .iter()
                .map(|m| m.content.as_str())
                .collect();
            let system = match self.system.take() {
                Some(own) => format!("{own}\n\n{}", given.join("\n\n")),
                None => given.join("\n\n"),
            };
            self.system = Some(system).filter(|s| !s.trim().is_empty());
        }
        if messages.get(leading).map(|m| m.role) == Some(Role::Assistant) {
            bail!("the conversation starts with a reply: begin it with a user message");
        }
        for message in &messages[leading..] {
            let parent = self.branch.last().and_then(|e| e.id);
            let mut message = message.clone();
            let id = match message.role {
                Role::Assistant => self.commit_given_reply(parent, &message.content)?,
                _ => self.commit_user_message(parent, &message.content, &mut message.images)?,
            };
            self.branch.push(Entry::new(id, message));
        }
        Ok(())
    }

    /// Continues a conversation held elsewhere — an HTTP client sends the whole conversation
    /// with every request — from `messages` (user and assistant turns, oldest first). They are
    /// sent to the model but not stored; what [`Thread::send`] adds is.
    pub fn carry_on_from(&mut self, messages: Vec<Message>) {
        self.branch = messages
            .into_iter()
            .map(|message| Entry::new(None, message))
            .collect();
        self.dropped = 0;
    }

    /// Forgets the conversation: the next message starts a new one.
    pub fn reset(&mut self) {
        self.id = None;
        self.branch.clear();
        self.dropped = 0;
        self.new_session();
    }

    /// Tags the conversation with where it comes from beyond the front end (an MCP client's
    /// name, a batch line); stored when the conversation is.
    pub fn set_origin(&mut self, origin: Origin) {
        self.origin = origin;
    }

    /// Makes the thread's requests fill-in-the-middle prompts: each message sent is the code
    /// before the cursor, `suffix` the code after it (MCP's `complete_code` on a model whose
    /// vocabulary has the tokens for it: [`crate::domain::ModelFacts::fill_in_middle`]).
    pub fn fill_in_middle(&mut self, suffix: String) {
        self.infill = Some(suffix);
    }

    /// The stored conversation's id, once it has one.
    pub fn id(&self) -> Option<ConversationId> {
        self.id
    }

    /// The model the next turn goes to.
    pub fn model(&self) -> &ModelEntry {
        &self.model
    }

    /// The sampling parameters of the next turn.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Changes the sampling parameters of the turns to come.
    pub fn params_mut(&mut self) -> &mut SamplingParams {
        &mut self.params
    }

    /// The system prompt.
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// Messages on the branch being continued.
    pub fn len(&self) -> usize {
        self.branch.len()
    }

    /// Whether the branch is empty.
    pub fn is_empty(&self) -> bool {
        self.branch.is_empty()
    }

    /// Oldest messages no longer sent because the conversation outgrew the context.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The last reply on the branch, if any.
    pub fn last_reply(&self) -> Option<&str> {
        self.branch
            .iter()
            .rev()
            .find(|e| e.message.role == Role::Assistant)
            .map(|e| e.message.content.as_str())
    }

    /// The last user message on the branch, if any.
    pub fn last_message(&self) -> Option<&str> {
        self.branch
            .iter()
            .rev()
            .find(|e| e.message.role == Role::User)
            .map(|e| e.message.content.as_str())
    }

    /// Sets (or with `None` clears) the system prompt of the turns to come, and stores it.
    pub fn set_system(&mut self, system: Option<String>) -> Result<()> {
        self.system = system.filter(|s| !s.trim().is_empty());
        if let (Some(mut store), Some(id)) = (self.service.store(), self.id) {
            store.set_system(id, self.system.as_deref())?;
        }
        Ok(())
    }

    /// Sends a user message and starts the reply. The message is committed before anything is
    /// generated.
    ///
    /// When the history cannot be written (a full disk, a database that became read-only), the
    /// message is still answered, unsaved, and the turn says so in a [`Notice::NotSaved`].
    ///
    /// [`Notice::NotSaved`]: super::Notice::NotSaved
    pub fn send(&mut self, text: &str) -> Result<Turn<'_>> {
        self.send_with_images(text, Vec::new())
    }

    /// [`Thread::send`] for a message that shows `images` (checked already: [`Image::from_file`],
    /// [`Image::from_bytes`]). They are stored with the message — a copy of each kept in the
    /// data folder unless `copy_images = false`, and always for bytes given inline — and sent
    /// to the model with it and with every later turn of the conversation.
    pub fn send_with_images(&mut self, text: &str, mut images: Vec<Image>) -> Result<Turn<'_>> {
        let parent = self.last_stored();
        let id = match self.commit_user_message(parent, text, &mut images) {
            Ok(id) => id,
            Err(e) if e.is_unwritable() => {
                self.not_saved = Some(e.to_string());
                None
            }
            Err(e) => return Err(e.into()),
        };
        self.branch.push(Entry::new(
            id,
            Message::new(Role::User, text).with_images(images),
        ));
        self.reply()
    }

    /// The newest message on the branch that is in the store: where the next one hangs.
    fn last_stored(&self) -> Option<MessageId> {
        self.branch.iter().rev().find_map(|e| e.id)
    }

    /// Generates the last reply again; the old one stays in the store as a sibling branch.
    pub fn retry(&mut self) -> Result<Turn<'_>> {
        match self.branch.last().map(|e| e.message.role) {
            Some(Role::Assistant) => {
                self.branch.pop();
            }
            Some(Role::User) => {}
            _ => bail!("nothing to retry yet: send a message first"),
        }
        self.reply()
    }

    /// Replaces the last user message with `text` (as a new branch) and answers it.
    pub fn edit_last(&mut self, text: &str) -> Result<Turn<'_>> {
        let Some(at) = self
            .branch
            .iter()
            .rposition(|e| e.message.role == Role::User)
        else {
            bail!("nothing to edit yet: send a message first");
        };
        self.branch.truncate(at);
        self.dropped = self.dropped.min(self.branch.len());
        self.send(text)
    }

    /// Continues from an earlier point: the next message starts a new branch there.
    pub fn fork(&mut self, at: ForkPoint) -> Result<()> {
        match at {
            ForkPoint::After(id) => {
                let conv = {
                    let mut store = self
                        .service
                        .store()
                        .context("history is off in this shell (--no-log)")?;
                    store.fork(id)?
                };
                self.resume(conv, None)
            }
            ForkPoint::BeforeLastMessage => {
                let Some(at) = self
                    .branch
                    .iter()
                    .rposition(|e| e.message.role == Role::User)
                else {
                    bail!("nothing to fork from yet");
                };
                self.branch.truncate(at);
                if let (Some(mut store), Some(parent)) =
                    (self.service.store(), self.branch.last().and_then(|e| e.id))
                {
                    store.fork(parent)?;
                }
                self.dropped = self.dropped.min(self.branch.len());
                Ok(())
            }
        }
    }

    /// Loads `model` (reporting progress) and makes it the thread's model; the whole
    /// conversation goes to it with the next message. The old engine keeps its place in the
    /// pool. A caller that stops waiting leaves the thread on its old model.
    pub async fn switch_model(
        &mut self,
        model: ModelEntry,
        progress: impl FnMut(f32) + Send,
    ) -> Result<EngineDescription> {
        let loaded = self.service.generator().preload(&model, progress).await?;
        self.model = model;
        // The new engine has not seen this conversation: a fresh session cache.
        self.new_session();
        Ok(loaded)
    }

    /// The engine serving the thread's model now, if one runs.
    pub fn engine(&self) -> Option<EngineDescription> {
        self.service.generator().engine_of(&self.model.name)
    }

    fn new_session(&mut self) {
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed) + 1;
        self.session = format!("chat-{}-{n}", std::process::id());
    }

    /// Stores a user message and its images; each image that gets a copy in the data folder
    /// learns where it is (so the engine reads the copy, which cannot change).
    fn commit_user_message(
        &mut self,
        parent: Option<MessageId>,
        text: &str,
        images: &mut [Image],
    ) -> Result<Option<MessageId>, StoreError> {
        let Some(mut store) = self.service.store() else {
            return Ok(None);
        };
        let copy_all = self.service.config().copy_images;
        for image in images.iter_mut() {
            if image.copy.is_none() && (copy_all || image.path.is_none()) {
                image.copy = Some(store.keep_image(image)?);
            }
        }
        let conv = match self.id {
            Some(c) => c,
            None => {
                let c = store.create_conversation(self.system.as_deref(), &self.origin)?;
                self.id = Some(c);
                c
            }
        };
        Ok(Some(store.add_user_message_with_images(
            conv,
            parent,
            text,
            images,
            &self.model.name,
            &self.params,
        )?))
    }

    /// Stores a reply the caller gave (see [`Thread::seed`]); a reply needs a message before it.
    fn commit_given_reply(
        &mut self,
        parent: Option<MessageId>,
        text: &str,
    ) -> Result<Option<MessageId>> {
        let Some(mut store) = self.service.store() else {
            return Ok(None);
        };
        let Some(parent) = parent else {
            bail!("a reply needs a message before it");
        };
        let id = store.start_reply(parent, &self.model.name, &self.params)?;
        let end = ReplyEnd {
            text: text.to_string(),
            finish_reason: FinishReason::Stop,
            usage: None,
            timings: None,
            engine: None,
            backend: None,
            error: None,
        };
        store.finish_reply(id, &end)?;
        Ok(Some(id))
    }

    /// Starts the reply to the branch's last (user) message.
    fn reply(&mut self) -> Result<Turn<'_>> {
        let parent = self.branch.last().and_then(|e| e.id);
        let started = match (self.service.store(), parent) {
            (Some(mut store), Some(parent)) => store
                .start_reply(parent, &self.model.name, &self.params)
                .map(Some),
            _ => Ok(None),
        };
        let reply_id = match started {
            Ok(id) => id,
            Err(e) if e.is_unwritable() => {
                self.not_saved = Some(e.to_string());
                None
            }
            Err(e) => return Err(e.into()),
        };
        Turn::start(self, reply_id)
    }

    /// The request for the branch as it stands (minus dropped messages).
    pub(super) fn request(&self) -> (GenerateRequest, RequestParts) {
        // Replies with no text (stopped before the first token, or failed) carry nothing for
        // the model to read, and would only add the template's markers. A refused message is
        // left out unless it is the one being answered (a retry).
        let last = self.branch.len().saturating_sub(1);
        let turns: Vec<Message> = self.branch[self.dropped..]
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                let empty_reply = e.message.role == Role::Assistant && e.message.content.is_empty();
                !empty_reply && (!e.refused || self.dropped + i == last)
            })
            .map(|(_, e)| e.message.clone())
            .collect();
        let parts = match &self.infill {
            Some(suffix) => infill_parts(&turns, suffix, &self.params),
            None => request_parts(
                &self.model,
                self.style,
                self.system.as_deref(),
                &turns,
                &self.params,
            ),
        };
        let request = GenerateRequest {
            id: self.service.generator().new_request_id(),
            messages: parts.messages.clone(),
            session: Some(self.session.clone()),
            prompt: parts.prompt.clone(),
            params: parts.params.clone(),
        };
        (request, parts)
    }

    /// Leaves the oldest exchange out of the requests to come: everything before the next user
    /// message still sent. `false` when only the message being answered is left.
    pub(super) fn drop_oldest(&mut self) -> bool {
        let last = self.branch.len().saturating_sub(1);
        let next = self
            .branch
            .iter()
            .enumerate()
            .skip(self.dropped + 1)
            .find(|(i, e)| e.message.role == Role::User && (!e.refused || *i == last));
        match next {
            Some((i, _)) => {
                self.dropped = i;
                true
            }
            None => false,
        }
    }

    /// Marks the message being answered as refused — alone it is longer than the context — so
    /// it stays stored and shown but is never sent again, and puts back the exchanges trimmed
    /// for its sake (`dropped_before`). `false` if the last message is not a user's.
    pub(super) fn refuse_last(&mut self, dropped_before: usize) -> bool {
        let Some(entry) = self.branch.last_mut() else {
            return false;
        };
        if entry.message.role != Role::User {
            return false;
        }
        entry.refused = true;
        let id = entry.id;
        self.dropped = dropped_before.min(self.branch.len());
        self.set_refused(id, true);
        true
    }

    /// Whether the last message (the one being answered) shows images.
    pub(super) fn last_shows_images(&self) -> bool {
        self.branch
            .last()
            .is_some_and(|e| e.message.role == Role::User && !e.message.images.is_empty())
    }

    /// The message being answered got its reply after all (say, on a model with a larger
    /// context): it is part of the conversation again.
    pub(super) fn accept_last(&mut self) {
        let Some(entry) = self.branch.last_mut().filter(|e| e.refused) else {
            return;
        };
        entry.refused = false;
        let id = entry.id;
        self.set_refused(id, false);
    }

    fn set_refused(&mut self, id: Option<MessageId>, refused: bool) {
        let stored = match (self.service.store(), id) {
            (Some(mut store), Some(id)) => store.set_refused(id, refused),
            _ => Ok(()),
        };
        if let Err(e) = stored {
            self.not_saved = Some(e.to_string());
        }
    }

    /// Adds the finished reply to the branch.
    pub(super) fn push_reply(&mut self, id: Option<MessageId>, text: String) {
        self.branch
            .push(Entry::new(id, Message::new(Role::Assistant, text)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Paths};
    use crate::domain::Source;
    use crate::models::{ModelFormat, ModelKind};
    use crate::store::Store;
    use crate::supervisor::Supervisor;

    fn model() -> ModelEntry {
        ModelEntry {
            name: "m".into(),
            path: "/m.gguf".into(),
            engine: crate::domain::EngineKind::GemmaEngine,
            format: ModelFormat::Gguf,
            kind: ModelKind::Base,
            sha256: None,
            chat_template: None,
            tokenizer: None,
            remote: None,
            mmproj: None,
        }
    }

    fn service(dir: &std::path::Path, store: Option<Store>) -> TurnService {
        let paths = Paths {
            config_dir: dir.join("config"),
            data_dir: dir.join("data"),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
        };
        let config = Config::default();
        TurnService::new(
            Supervisor::unpublished(config.clone()),
            store,
            Source::Batch,
            &paths,
            &config,
        )
    }

    #[tokio::test]
    async fn threads_side_by_side_never_share_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path(), None);
        let new = || {
            Thread::new(
                &service,
                model(),
                None,
                SamplingParams::default(),
                PromptStyle::OneShot,
            )
        };
        let (a, b) = (new(), new());
        assert_ne!(a.request().0.session, b.request().0.session);
    }

    #[tokio::test]
    async fn a_seeded_conversation_is_stored_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("history.db")).unwrap();
        let service = service(dir.path(), Some(store));
        let mut thread = Thread::new(
            &service,
            model(),
            None,
            SamplingParams::default(),
            PromptStyle::Conversation,
        );
        let given = [
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello!"),
        ];
        thread.seed(&given).unwrap();
        assert_eq!(thread.system(), Some("Be brief."));
        assert_eq!(thread.len(), 2);
        let id = thread.id().unwrap();
        let store = service.store().unwrap();
        assert_eq!(
            store.conversation(id).unwrap().system.as_deref(),
            Some("Be brief.")
        );
        let stored = store.messages(id).unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[1].parent, Some(stored[0].id));
        assert_eq!(
            (stored[1].role, stored[1].content.as_str()),
            (Role::Assistant, "Hello!")
        );
        assert_eq!(stored[1].finish_reason, Some(FinishReason::Stop));
        assert_eq!(stored[1].engine, None);
    }

    #[tokio::test]
    async fn seeding_refuses_what_no_model_could_read() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path(), None);
        let new = || {
            Thread::new(
                &service,
                model(),
                None,
                SamplingParams::default(),
                PromptStyle::Conversation,
            )
        };
        let late = [
            Message::new(Role::User, "Hi"),
            Message::new(Role::System, "Be brief."),
        ];
        let err = new().seed(&late).unwrap_err().to_string();
        assert!(err.starts_with("message 2 is a system message"), "{err}");
        let reply_first = [Message::new(Role::Assistant, "Hello!")];
        let err = new().seed(&reply_first).unwrap_err().to_string();
        assert!(err.contains("begin it with a user message"), "{err}");
    }
}
