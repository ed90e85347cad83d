//! Hard requirements the engine can index on (ROUTING.md §10.2 "indexable hard predicates"),
//! read from the top-level conjuncts of a compiled target expression.
//!
//! Every requirement is *necessary*: an agent that fails one can never satisfy the
//! expression, so the engine may drop it before evaluating anything. They are not
//! *sufficient*: candidates that pass still go through the full expression. Anything under
//! `or` or `not` is left to evaluation.

use std::collections::{BTreeMap, BTreeSet};

use super::ast::CmpOp;
use super::eval::{AgentField, Node, Operand};
use super::schema::Value;

/// What every eligible agent must have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Skill name → minimum level. `0` means "has the skill at any level".
    pub skills: BTreeMap<String, u8>,
    /// Language code → minimum level.
    pub languages: BTreeMap<String, u8>,
    /// Teams the agent must belong to, all of them.
    pub teams: BTreeSet<String>,
    /// The agent's branch must equal each of these (two different ones: nobody qualifies).
    pub branches: BTreeSet<String>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.skills.is_empty()
            && self.languages.is_empty()
            && self.teams.is_empty()
            && self.branches.is_empty()
    }
}

pub(crate) fn extract(node: &Node) -> Requirements {
    let mut req = Requirements::default();
    match node {
        Node::All(items) => items.iter().for_each(|n| conjunct(n, &mut req)),
        other => conjunct(other, &mut req),
    }
    req
}

fn conjunct(node: &Node, req: &mut Requirements) {
    match node {
        Node::Team {
            teams,
            negated: false,
        } if teams.len() == 1 => {
            req.teams.extend(teams.iter().cloned());
        }
        Node::IsNull(op, true) => level(op, 0, req),
        Node::Cmp(op, a, b) => {
            // Any comparison that holds implies its skill/lang operand is present (null
            // compares false), so each one yields at least "level ≥ 0".
            level(a, lower_bound(*op, b), req);
            level(b, lower_bound(mirror(*op), a), req);
            match (op, a, b) {
                (CmpOp::Has, Operand::Agent(AgentField::Teams), Operand::Lit(Value::String(t)))
                | (CmpOp::In, Operand::Lit(Value::String(t)), Operand::Agent(AgentField::Teams)) => {
                    req.teams.insert(t.clone());
                }
                (CmpOp::Eq, Operand::Agent(AgentField::Branch), Operand::Lit(Value::String(b)))
                | (CmpOp::Eq, Operand::Lit(Value::String(b)), Operand::Agent(AgentField::Branch)) =>
                {
                    req.branches.insert(b.clone());
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Records `min` for `op` when it is a skill or language level.
fn level(op: &Operand, min: u8, req: &mut Requirements) {
    let (map, key) = match op {
        Operand::Skill(name) => (&mut req.skills, name),
        Operand::Lang(code) => (&mut req.languages, code),
        _ => return,
    };
    let entry = map.entry(key.clone()).or_insert(0);
    *entry = (*entry).max(min);
}

/// The least level implied by `level op other`, when `other` is a number (or a list of them).
fn lower_bound(op: CmpOp, other: &Operand) -> u8 {
    let n = match other {
        Operand::Lit(Value::Number(n)) => *n,
        Operand::Lit(Value::List(items)) if op == CmpOp::In => {
            // The smallest listed number; levels are whole, so round up.
            let least = items
                .iter()
                .filter_map(|v| {
                    if let Value::Number(n) = v {
                        Some(*n)
                    } else {
                        None
                    }
                })
                .fold(f64::INFINITY, f64::min);
            return clamp(least.ceil());
        }
        _ => return 0,
    };
    match op {
        CmpOp::Ge | CmpOp::Eq => clamp(n.ceil()),
        CmpOp::Gt => clamp(n.floor() + 1.0),
        _ => 0,
    }
}

/// `a op b` ⇔ `b (mirror op) a` for the orderings.
fn mirror(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

fn clamp(n: f64) -> u8 {
    // An empty `in` list gives +inf: nobody qualifies, and 255 exceeds every level.
    if n.is_nan() {
        0
    } else {
        n.clamp(0.0, f64::from(u8::MAX)) as u8
    }
}
