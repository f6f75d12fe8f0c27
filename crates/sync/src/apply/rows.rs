//! Row-by-row statements: prepared once per text, sent pipelined in order.

use super::*;

/// Updates and deletes in flight at once on the pipelined connection.
pub(super) const PIPELINE: usize = 256;

impl Applier {
    pub(super) async fn statement(
        &mut self,
        sql_text: &str,
        types: &[Type],
    ) -> Result<Statement, Error> {
        if let Some(s) = self.statements.get(sql_text) {
            return Ok(s.clone());
        }
        self.settle().await?;
        let s = self
            .client
            .prepare_typed(sql_text, types)
            .await
            .map_err(sql("target", format!("prepare {sql_text}")))?;
        self.statements.insert(sql_text.to_string(), s.clone());
        Ok(s)
    }

    pub(super) async fn queue(
        &mut self,
        sql_text: String,
        params: Vec<Option<String>>,
    ) -> Result<(), Error> {
        let stmt = self
            .statement(&sql_text, &vec![Type::TEXT; params.len()])
            .await?;
        self.execs.push((stmt, params));
        self.group.rows += 1;
        if self.execs.len() >= PIPELINE {
            self.flush_execs().await?;
        }
        Ok(())
    }

    pub(super) async fn flush_execs(&mut self) -> Result<(), Error> {
        if self.execs.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        let execs = std::mem::take(&mut self.execs);
        let client = &self.client;
        // Issued together, the statements are pipelined on the connection and run in order.
        let results = futures_util::future::join_all(execs.iter().map(|(s, p)| {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            async move { client.execute(s, &params).await }
        }))
        .await;
        for r in results {
            if r.map_err(sql("target", "apply an update or delete"))? == 0 {
                self.missing_rows += 1;
                tracing::warn!("an UPDATE or DELETE found no row on the target: the target differs from the source");
            }
        }
        Ok(())
    }
}

/// A column value as a text parameter: Some(None) for NULL, None for an unchanged TOAST
/// value (leave the target's).
pub(super) fn param(v: &Value, table: &str) -> Result<Option<Option<String>>, Error> {
    match v {
        Value::Null => Ok(Some(None)),
        Value::UnchangedToast => Ok(None),
        Value::Text(b) => String::from_utf8(b.to_vec())
            .map(|s| Some(Some(s)))
            .map_err(|_| Error::Protocol(format!("{table}: a value is not valid UTF-8"))),
        Value::Binary(_) => Err(Error::Protocol(format!(
            "{table}: a value arrived in binary form, which this applier does not request"
        ))),
    }
}
