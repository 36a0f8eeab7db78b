//! Walking a conversation's message tree in reading order, for `history show` and Markdown export.
//!
//! A conversation is mostly one line of turns, so indentation only grows where the tree really
//! branches: a message with one child continues at its own depth; the children of a branch point
//! each start a branch one level deeper. The walk is iterative, so a very long conversation
//! cannot overflow the stack.

use std::collections::HashMap;

use super::{MessageId, StoredMessage};

/// Where a visited message starts a branch: the `index`-th (from 1) of `count` children of
/// `from` (`None` when the branches are several roots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    /// Which branch this is, counting from 1, oldest first.
    pub index: usize,
    /// How many branches start at the same point.
    pub count: usize,
    /// The message they branch from; `None` when they are several roots.
    pub from: Option<MessageId>,
}

/// One message in reading order.
#[derive(Debug)]
pub struct Visit<'a> {
    /// The message visited.
    pub message: &'a StoredMessage,
    /// How many branch points lie above this message.
    pub depth: usize,
    /// Set on the first message of a branch.
    pub branch: Option<Branch>,
}

/// Depth-first, oldest child first. `messages` are one conversation's, in any order.
pub fn depth_first(messages: &[StoredMessage]) -> Vec<Visit<'_>> {
    let mut children: HashMap<Option<MessageId>, Vec<&StoredMessage>> = HashMap::new();
    for m in messages {
        children.entry(m.parent).or_default().push(m);
    }
    for list in children.values_mut() {
        list.sort_by_key(|m| m.id);
    }
    let mut out = Vec::with_capacity(messages.len());
    let mut stack: Vec<Visit<'_>> = Vec::new();
    push_children(&mut stack, children.get(&None), None, 0);
    while let Some(visit) = stack.pop() {
        let (id, depth) = (visit.message.id, visit.depth);
        out.push(visit);
        push_children(&mut stack, children.get(&Some(id)), Some(id), depth);
    }
    out
}

/// Pushes `kids` so the oldest is popped first; several kids each open a branch one level down.
fn push_children<'a>(
    stack: &mut Vec<Visit<'a>>,
    kids: Option<&Vec<&'a StoredMessage>>,
    from: Option<MessageId>,
    depth: usize,
) {
    let Some(kids) = kids else { return };
    let count = kids.len();
    for (i, kid) in kids.iter().enumerate().rev() {
        let visit = if count == 1 {
            Visit {
                message: kid,
                depth,
                branch: None,
            }
        } else {
            Visit {
                message: kid,
                depth: depth + 1,
                branch: Some(Branch {
                    index: i + 1,
                    count,
                    from,
                }),
            }
        };
        stack.push(visit);
    }
}
