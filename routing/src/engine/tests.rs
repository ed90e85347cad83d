//! Engine tests: ordering, steps, agent order, trace.

use std::collections::BTreeMap;

use super::*;

pub(super) fn agent(id: &str, teams: &[&str], skills: &[(&str, u8)], wa_capacity: u32) -> Agent {
    Agent {
        view: AgentView {
            id: id.to_owned(),
            teams: teams.iter().map(|t| (*t).to_owned()).collect(),
            branch: None,
            skills: skills
                .iter()
                .map(|(s, l)| ((*s).to_owned(), *l))
                .collect::<BTreeMap<_, _>>(),
            languages: BTreeMap::new(),
        },
        online: true,
        capacity: [wa_capacity, 0, 0],
        active: [0; CHANNEL_COUNT],
        last_assigned_at: 0,
    }
}

pub(super) fn waiting(id: &str, queued_at: i64) -> Waiting {
    Waiting {
        id: id.to_owned(),
        conv: ConvView {
            channel: "whatsapp".into(),
            inbox: "support".into(),
            ..ConvView::default()
        },
        inbox_team: None,
        queued_at,
        reply_deadline: None,
        last_agent: None,
        excluded: Vec::new(),
    }
}

#[test]
fn skill_fit_then_spare_capacity_then_least_recent_then_id() {
    let schema = Schema::default();
    let rule = compile_rule(
        "rr_1",
        "billing",
        "true",
        &[("skill(\"billing\") >= 3".to_owned(), 10, None)],
        Mode::Auto,
        &schema,
    )
    .expect("compiles");
    let mut agents = vec![
        agent("a", &[], &[("billing", 3)], 2),
        agent("b", &[], &[("billing", 5)], 2),
        agent("c", &[], &[("billing", 2)], 2),
    ];
    agents[1].active[0] = 2; // b is full
    let picture = Picture::new(agents, vec![rule], EngineConfig::default());
    let d = picture.decide(&waiting("c1", 0), 10);
    assert_eq!(d.agent.as_deref(), Some("a"));
    assert_eq!(d.trace.counts.indexed, 2);
    assert_eq!(d.trace.counts.with_capacity, 1);
    assert_eq!(d.trace.decided_by, Some("only_candidate"));
}
