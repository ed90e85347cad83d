//! Reports over the conversations a scope reaches: SLA (volumes and first-response times) and
//! volume (conversations and messages per channel, inbox, team or agent).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};
use crate::access::RecordScope;

/// At most this many conversations feed one report.
pub const MAX_REPORT_CONVERSATIONS: i64 = 100_000;

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SlaFigures {
    pub conversations: i64,
    pub open: i64,
    pub resolved: i64,
    /// Conversations with an inbound message that got an outbound reply.
    pub responded: i64,
    pub first_response_median_ms: Option<i64>,
    pub first_response_p90_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentFigures {
    pub assignee_id: Option<String>,
    #[serde(flatten)]
    pub figures: SlaFigures,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlaReport {
    pub since_ms: i64,
    pub until_ms: i64,
    pub scope: String,
    pub totals: SlaFigures,
    pub by_assignee: Vec<AgentFigures>,
    /// True when more than `MAX_REPORT_CONVERSATIONS` matched and the report covers the newest.
    pub truncated: bool,
}

struct Row_ {
    status: String,
    assignee: Option<String>,
    first_response_ms: Option<i64>,
}

fn figures(rows: &[&Row_]) -> SlaFigures {
    let mut times: Vec<i64> = rows.iter().filter_map(|r| r.first_response_ms).collect();
    times.sort_unstable();
    let pick = |q: f64| -> Option<i64> {
        (!times.is_empty()).then(|| times[((times.len() - 1) as f64 * q).round() as usize])
    };
    SlaFigures {
        conversations: rows.len() as i64,
        open: rows.iter().filter(|r| r.status != "resolved").count() as i64,
        resolved: rows.iter().filter(|r| r.status == "resolved").count() as i64,
        responded: times.len() as i64,
        first_response_median_ms: pick(0.5),
        first_response_p90_ms: pick(0.9),
    }
}

impl Store {
    /// Conversations created in `[since, until)` that the scope reaches.
    pub async fn sla_report(
        &self,
        account_id: &str,
        scope: &RecordScope,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<SlaReport, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(concat!(
            "SELECT status, assignee_id, \
             (SELECT MIN(sent_at) FROM messages m WHERE m.conversation_id = conversations.id AND m.direction = 'inbound'), \
             (SELECT MIN(created_at) FROM messages m WHERE m.conversation_id = conversations.id AND m.direction = 'outbound') \
             FROM conversations WHERE account_id = $1 AND created_at >= $2 AND created_at < $3",
            in_scope!("$4", "$5", "$6"),
            " ORDER BY id DESC LIMIT $7"
        ))
        .bind(account_id)
        .bind(since_ms)
        .bind(until_ms)
        .bind(scope.kind())
        .bind(scope.branch_id.as_deref())
        .bind(scope.user_id.as_deref())
        .bind(MAX_REPORT_CONVERSATIONS + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let truncated = rows.len() as i64 > MAX_REPORT_CONVERSATIONS;
        let rows: Vec<Row_> = rows
            .iter()
            .take(MAX_REPORT_CONVERSATIONS as usize)
            .map(|r| {
                let first_in: Option<i64> = r.get(2);
                let first_out: Option<i64> = r.get(3);
                Row_ {
                    status: r.get(0),
                    assignee: r.get(1),
                    first_response_ms: match (first_in, first_out) {
                        (Some(i), Some(o)) if o >= i => Some(o - i),
                        _ => None,
                    },
                }
            })
            .collect();
        let mut groups: BTreeMap<Option<String>, Vec<&Row_>> = BTreeMap::new();
        for row in &rows {
            groups.entry(row.assignee.clone()).or_default().push(row);
        }
        Ok(SlaReport {
            since_ms,
            until_ms,
            scope: scope.kind().to_owned(),
            totals: figures(&rows.iter().collect::<Vec<_>>()),
            by_assignee: groups
                .into_iter()
                .map(|(assignee_id, rows)| AgentFigures {
                    assignee_id,
                    figures: figures(&rows),
                })
                .collect(),
            truncated,
        })
    }
}

/// What a volume report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Channel,
    Inbox,
    Team,
    Agent,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "channel" => Some(GroupBy::Channel),
            "inbox" => Some(GroupBy::Inbox),
            "team" => Some(GroupBy::Team),
            "agent" => Some(GroupBy::Agent),
            _ => None,
        }
    }

    /// The conversations column; from this fixed list only, so it can be written into SQL.
    fn column(self) -> &'static str {
        match self {
            GroupBy::Channel => "channel",
            GroupBy::Inbox => "inbox_id",
            GroupBy::Team => "team_id",
            GroupBy::Agent => "assignee_id",
        }
    }
}

/// One group of a volume report.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct VolumeRow {
    /// The channel, inbox id, team id or agent id; `null` for conversations without one (no
    /// team, not assigned).
    pub key: Option<String>,
    /// Conversations created in the window.
    pub conversations: i64,
    /// Of those, resolved by now.
    pub resolved: i64,
    /// Messages from customers in the window.
    pub inbound_messages: i64,
    /// Replies sent in the window (notes excluded).
    pub outbound_messages: i64,
}

impl Store {
    /// Conversations created and messages exchanged in `[since, until)` that the scope
    /// reaches, per group, ordered by key.
    pub async fn volume_report(
        &self,
        account_id: &str,
        scope: &RecordScope,
        group_by: GroupBy,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<VolumeRow>, StoreError> {
        let column = group_by.column();
        let conversations_sql = format!(
            "SELECT {column}, COUNT(*), CAST(SUM(CASE WHEN status = 'resolved' THEN 1 ELSE 0 END) AS BIGINT) \
             FROM conversations WHERE account_id = $1 AND created_at >= $2 AND created_at < $3{} \
             GROUP BY {column}",
            in_scope!("$4", "$5", "$6")
        );
        let messages_sql = format!(
            "SELECT c.{column}, m.direction, COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.account_id = $1 AND m.created_at >= $2 AND m.created_at < $3 \
             AND m.direction IN ('inbound', 'outbound') \
             AND m.conversation_id IN (SELECT id FROM conversations WHERE account_id = $1{}) \
             GROUP BY c.{column}, m.direction",
            in_scope!("$4", "$5", "$6")
        );
        let mut tx = self.scoped(account_id).await?;
        let mut groups: BTreeMap<Option<String>, VolumeRow> = BTreeMap::new();
        for row in sqlx::query(sqlx::AssertSqlSafe(conversations_sql))
            .bind(account_id)
            .bind(since_ms)
            .bind(until_ms)
            .bind(scope.kind())
            .bind(scope.branch_id.as_deref())
            .bind(scope.user_id.as_deref())
            .fetch_all(&mut *tx)
            .await?
        {
            let g = groups.entry(row.get(0)).or_default();
            g.conversations = row.get(1);
            g.resolved = row.get::<Option<i64>, _>(2).unwrap_or(0);
        }
        for row in sqlx::query(sqlx::AssertSqlSafe(messages_sql))
            .bind(account_id)
            .bind(since_ms)
            .bind(until_ms)
            .bind(scope.kind())
            .bind(scope.branch_id.as_deref())
            .bind(scope.user_id.as_deref())
            .fetch_all(&mut *tx)
            .await?
        {
            let g = groups.entry(row.get(0)).or_default();
            let n: i64 = row.get(2);
            if row.get::<String, _>(1) == "inbound" {
                g.inbound_messages = n;
            } else {
                g.outbound_messages = n;
            }
        }
        tx.commit().await?;
        Ok(groups
            .into_iter()
            .map(|(key, row)| VolumeRow { key, ..row })
            .collect())
    }
}
