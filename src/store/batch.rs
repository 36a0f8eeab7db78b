//! The conversations of one `gemmactl batch` run (`history list --batch ID`).

use rusqlite::params;

use super::{
    conversation_from_row, fail, ConversationSummary, Result, Store, CONVERSATION_COLUMNS,
};

impl Store {
    /// The conversations batch `batch_id` stored, in the order its lines were started.
    pub fn batch_conversations(
        &self,
        batch_id: &str,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS},
                    (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
             FROM conversations c
             WHERE batch_id = ?1
             ORDER BY id
             LIMIT ?2"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(&sql).map_err(fail(&self.path))?;
        let rows = stmt
            .query_map(params![batch_id, limit], |row| {
                Ok(ConversationSummary {
                    conversation: conversation_from_row(row)?,
                    messages: row.get(11)?,
                })
            })
            .map_err(fail(&self.path))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{BatchLine, Origin, SamplingParams, Source};
    use crate::store::Store;

    #[test]
    fn a_batch_lists_its_own_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("h.db")).unwrap();
        let line = |batch: &str, id: &str| Origin {
            source: Source::Batch,
            client: None,
            batch: Some(BatchLine {
                batch_id: batch.into(),
                line_id: id.into(),
            }),
        };
        let a = store.create_conversation(None, &line("b1", "q1")).unwrap();
        store
            .add_user_message(a, None, "Hi", "m", &SamplingParams::default())
            .unwrap();
        store.create_conversation(None, &line("b2", "q1")).unwrap();
        store
            .create_conversation(None, &Origin::new(Source::Run))
            .unwrap();
        store.create_conversation(None, &line("b1", "q2")).unwrap();
        let rows = store.batch_conversations("b1", 100).unwrap();
        let lines: Vec<&str> = rows
            .iter()
            .map(|r| {
                let origin = r.conversation.origin.as_ref().unwrap();
                origin.batch.as_ref().unwrap().line_id.as_str()
            })
            .collect();
        assert_eq!(lines, ["q1", "q2"]);
        assert_eq!(rows[0].messages, 1);
        assert_eq!(store.batch_conversations("b1", 1).unwrap().len(), 1);
        assert!(store.batch_conversations("none", 10).unwrap().is_empty());
    }
}
