//! Who may see an event: the access matrix (docs/ACCESS.md) applied to each socket.
//!
//! An agent console sees by its `view_conversations` scope: conversations by their placement
//! when the event happened (branch, team, assignee), and agents (offers, presence, capacity,
//! a conversation taken off someone) by who the agent is. A visitor sees public messages of
//! its own contact's conversations and agents typing in them.

use std::collections::HashSet;

use super::LiveEvent;
use crate::access::Scope;
use crate::store::live::EventScope;

#[derive(Debug, Clone)]
pub enum Viewer {
    Agent(AgentView),
    Visitor { contact_id: String },
}

#[derive(Debug, Clone)]
pub struct AgentView {
    pub user_id: String,
    /// `view_conversations`, if granted.
    pub scope: Option<Scope>,
    pub branch_id: Option<String>,
    pub team_ids: HashSet<String>,
    /// Agents a `team` or `branch` viewer reaches: members of its teams, users of its branch.
    pub reach: HashSet<String>,
    /// Conversations this socket subscribed to (for `typing`).
    pub subscribed: HashSet<String>,
}

impl AgentView {
    fn reaches_conversation(&self, s: &EventScope) -> bool {
        if s.conversation_id.is_none() && s.inbox_id.is_none() {
            return false;
        }
        match self.scope {
            Some(Scope::All) => true,
            Some(Scope::Branch) => self.branch_id.is_some() && s.branch_id == self.branch_id,
            Some(Scope::Team) => s
                .team_id
                .as_ref()
                .is_some_and(|t| self.team_ids.contains(t)),
            Some(Scope::Assigned) | Some(Scope::Own) => {
                s.conversation_id.is_some() && s.assignee_id.as_deref() == Some(&self.user_id)
            }
            None => false,
        }
    }

    fn reaches_agent(&self, agent: &str) -> bool {
        agent == self.user_id
            || match self.scope {
                Some(Scope::All) => true,
                Some(Scope::Branch) | Some(Scope::Team) => self.reach.contains(agent),
                _ => false,
            }
    }

    fn admits(&self, e: &LiveEvent, socket_id: &str) -> bool {
        let s = &e.scope;
        match &*e.kind {
            "typing" => {
                e.origin.as_deref() != Some(socket_id)
                    && s.conversation_id
                        .as_ref()
                        .is_some_and(|c| self.subscribed.contains(c))
                    && self.reaches_conversation(s)
            }
            // Queue figures are for those who watch queues, not for agents.
            "queue.stats" => {
                matches!(self.scope, Some(Scope::All | Scope::Branch | Scope::Team))
                    && self.reaches_conversation(s)
            }
            _ => {
                self.reaches_conversation(s)
                    || s.agent_id.as_deref().is_some_and(|a| self.reaches_agent(a))
            }
        }
    }
}

impl Viewer {
    /// Whether the socket `socket_id` with this viewer may receive `e`.
    pub fn admits(&self, e: &LiveEvent, socket_id: &str) -> bool {
        if &*e.kind == "resync.required" {
            return true; // a pump's own notice to every socket of the account
        }
        match self {
            Viewer::Agent(view) => view.admits(e, socket_id),
            Viewer::Visitor { contact_id } => {
                e.scope.contact_id.as_deref() == Some(contact_id)
                    && match &*e.kind {
                        "message.created" => true,
                        "typing" => e.origin.as_deref() != Some(socket_id),
                        _ => false,
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, scope: EventScope) -> LiveEvent {
        LiveEvent::new(Some(1), kind, scope, None, "{}".into())
    }

    fn conv(team: &str, branch: &str, assignee: Option<&str>) -> EventScope {
        EventScope {
            conversation_id: Some("conv_1".into()),
            contact_id: Some("ct_1".into()),
            inbox_id: Some("inb_1".into()),
            team_id: Some(team.into()),
            branch_id: Some(branch.into()),
            assignee_id: assignee.map(Into::into),
            agent_id: None,
        }
    }

    fn agent(scope: Option<Scope>, user: &str) -> Viewer {
        Viewer::Agent(AgentView {
            user_id: user.into(),
            scope,
            branch_id: Some("br_1".into()),
            team_ids: ["team_1".to_owned()].into(),
            reach: ["usr_mate".to_owned()].into(),
            subscribed: HashSet::new(),
        })
    }

    #[test]
    fn conversations_follow_the_matrix() {
        let e = event("message.created", conv("team_1", "br_2", Some("usr_a")));
        assert!(agent(Some(Scope::All), "usr_x").admits(&e, "s"));
        assert!(agent(Some(Scope::Team), "usr_x").admits(&e, "s"));
        assert!(
            !agent(Some(Scope::Branch), "usr_x").admits(&e, "s"),
            "other branch"
        );
        assert!(agent(Some(Scope::Assigned), "usr_a").admits(&e, "s"));
        assert!(!agent(Some(Scope::Assigned), "usr_b").admits(&e, "s"));
        assert!(
            !agent(None, "usr_a").admits(&e, "s"),
            "no view_conversations"
        );
        let other_team = event("message.created", conv("team_2", "br_1", None));
        assert!(!agent(Some(Scope::Team), "usr_x").admits(&other_team, "s"));
        assert!(agent(Some(Scope::Branch), "usr_x").admits(&other_team, "s"));
    }

    #[test]
    fn agents_see_their_own_offers_and_presence_and_leads_their_members() {
        let offer = event(
            "offer.created",
            EventScope {
                agent_id: Some("usr_a".into()),
                ..conv("team_9", "br_9", None)
            },
        );
        assert!(agent(Some(Scope::Assigned), "usr_a").admits(&offer, "s"));
        assert!(!agent(Some(Scope::Assigned), "usr_b").admits(&offer, "s"));
        let presence = event(
            "presence.changed",
            EventScope {
                agent_id: Some("usr_mate".into()),
                ..EventScope::default()
            },
        );
        assert!(agent(Some(Scope::Team), "usr_x").admits(&presence, "s"));
        assert!(!agent(Some(Scope::Assigned), "usr_x").admits(&presence, "s"));
        let stranger = event(
            "presence.changed",
            EventScope {
                agent_id: Some("usr_far".into()),
                ..EventScope::default()
            },
        );
        assert!(!agent(Some(Scope::Team), "usr_x").admits(&stranger, "s"));
        assert!(agent(Some(Scope::All), "usr_x").admits(&stranger, "s"));
    }

    #[test]
    fn visitors_see_their_messages_only() {
        let visitor = Viewer::Visitor {
            contact_id: "ct_1".into(),
        };
        assert!(visitor.admits(&event("message.created", conv("t", "b", None)), "s"));
        assert!(!visitor.admits(&event("conversation.assigned", conv("t", "b", None)), "s"));
        let mut other = conv("t", "b", None);
        other.contact_id = Some("ct_2".into());
        assert!(!visitor.admits(&event("message.created", other), "s"));
    }
}
