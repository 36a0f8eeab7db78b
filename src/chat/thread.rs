//! One conversation being carried on, and the operations on it.
//!
//! The thread keeps the branch it continues (the messages from the root to the newest, with
//! their ids in the store when history is on) and sends it whole with every request: the engine's
//! session cache is only a cache. Oldest exchanges that no longer fit the context are left out
//! of requests (`dropped`), never deleted.

use anyhow::{bail, Context, Result};

use super::request::{request_parts, PromptStyle, RequestParts};
use super::turn::Turn;
use super::TurnService;
use crate::domain::{EngineDescription, GenerateRequest, Message, Origin, Role, SamplingParams};
use crate::models::ModelEntry;
use crate::store::{ConversationId, MessageId};

/// A message on the thread's branch, with its id in the store when it is stored.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: Option<MessageId>,
    pub(super) message: Message,
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
    session: String,
    sessions_started: u32,
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
            session: String::new(),
            sessions_started: 0,
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
            })
            .collect();
        self.id = Some(conv.id);
        self.system = system.or(conv.system).filter(|s| !s.trim().is_empty());
        self.dropped = 0;
        self.new_session();
        Ok(())
    }

    /// Continues a conversation held elsewhere — an HTTP client sends the whole conversation
    /// with every request — from `messages` (user and assistant turns, oldest first). They are
    /// sent to the model but not stored; what [`Thread::send`] adds is.
    pub fn seed(&mut self, messages: Vec<Message>) {
        self.branch = messages
            .into_iter()
            .map(|message| Entry { id: None, message })
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
    pub fn send(&mut self, text: &str) -> Result<Turn<'_>> {
        let parent = self.branch.last().and_then(|e| e.id);
        let id = self.commit_user_message(parent, text)?;
        self.branch.push(Entry {
            id,
            message: Message::new(Role::User, text),
        });
        self.reply()
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
        self.sessions_started += 1;
        self.session = format!("chat-{}-{}", std::process::id(), self.sessions_started);
    }

    fn commit_user_message(
        &mut self,
        parent: Option<MessageId>,
        text: &str,
    ) -> Result<Option<MessageId>> {
        let Some(mut store) = self.service.store() else {
            return Ok(None);
        };
        let conv = match self.id {
            Some(c) => c,
            None => {
                let c = store.create_conversation(self.system.as_deref(), &self.origin)?;
                self.id = Some(c);
                c
            }
        };
        Ok(Some(store.add_user_message(
            conv,
            parent,
            text,
            &self.model.name,
            &self.params,
        )?))
    }

    /// Starts the reply to the branch's last (user) message.
    fn reply(&mut self) -> Result<Turn<'_>> {
        let parent = self.branch.last().and_then(|e| e.id);
        let reply_id = match (self.service.store(), parent) {
            (Some(mut store), Some(parent)) => {
                Some(store.start_reply(parent, &self.model.name, &self.params)?)
            }
            _ => None,
        };
        Turn::start(self, reply_id)
    }

    /// The request for the branch as it stands (minus dropped messages).
    pub(super) fn request(&self) -> (GenerateRequest, RequestParts) {
        // Replies with no text (stopped before the first token, or failed) carry nothing for
        // the model to read, and would only add the template's markers.
        let turns: Vec<Message> = self.branch[self.dropped..]
            .iter()
            .filter(|e| !(e.message.role == Role::Assistant && e.message.content.is_empty()))
            .map(|e| e.message.clone())
            .collect();
        let parts = request_parts(
            &self.model,
            self.style,
            self.system.as_deref(),
            &turns,
            &self.params,
        );
        let request = GenerateRequest {
            id: self.service.generator().new_request_id(),
            messages: parts.messages.clone(),
            session: Some(self.session.clone()),
            prompt: parts.prompt.clone(),
            params: parts.params.clone(),
        };
        (request, parts)
    }

    /// Leaves the oldest exchange out of the requests to come; `false` when only the message
    /// being answered is left.
    pub(super) fn drop_oldest(&mut self) -> bool {
        if self.branch.len() - self.dropped > 2 {
            self.dropped += 2;
            true
        } else {
            false
        }
    }

    /// Adds the finished reply to the branch.
    pub(super) fn push_reply(&mut self, id: Option<MessageId>, text: String) {
        self.branch.push(Entry {
            id,
            message: Message::new(Role::Assistant, text),
        });
    }
}
