//! The compiled form ([`Node`]) and its evaluation. Names are already resolved to enums and map
//! keys by the checker, so evaluation is a walk that borrows from the views and allocates
//! nothing. Type mismatches between the schema and the data read as null, never as a panic.

use super::ast::CmpOp;
use super::schema::{AgentView, ConvView, Value};

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(bool),
    /// A Bool operand used as a condition; null is false.
    Test(Operand),
    Not(Box<Node>),
    All(Vec<Node>),
    Any(Vec<Node>),
    Cmp(CmpOp, Operand, Operand),
    /// `operand is null` (`negated: false`) or `is not null`.
    IsNull(Operand, bool),
    /// The `team` convenience: whether any of `teams` is one of `agent.teams`, or with
    /// `negated`, none is.
    Team {
        teams: Vec<String>,
        negated: bool,
    },
}

/// A compiled value-producing operand.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Null,
    Lit(Value),
    Conv(ConvField),
    Contact(String),
    Agent(AgentField),
    Skill(String),
    Lang(String),
    Keyword(String),
    /// A parenthesised condition used as a Bool value, as in `(a or b) == true`.
    Cond(Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvField {
    Channel,
    Inbox,
    Language,
    Labels,
    Priority,
    FirstMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentField {
    Id,
    Teams,
    Branch,
}

/// A value during evaluation, borrowed from the views or the compiled literals.
#[derive(Debug, Clone, Copy)]
enum V<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    Strs(&'a [String]),
    Vals(&'a [Value]),
}

impl<'a> From<&'a Value> for V<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Bool(b) => V::Bool(*b),
            Value::Number(n) => V::Num(*n),
            Value::String(s) => V::Str(s),
            Value::List(items) => V::Vals(items),
        }
    }
}

#[derive(Clone, Copy)]
struct Ctx<'a> {
    conv: Option<&'a ConvView>,
    agent: Option<&'a AgentView>,
}

/// Evaluates `node`; a view that is `None` reads as all-null.
pub(crate) fn eval(node: &Node, conv: Option<&ConvView>, agent: Option<&AgentView>) -> bool {
    cond(node, Ctx { conv, agent })
}

fn cond(node: &Node, cx: Ctx<'_>) -> bool {
    match node {
        Node::Const(b) => *b,
        Node::Test(op) => matches!(operand(op, cx), V::Bool(true)),
        Node::Not(inner) => !cond(inner, cx),
        Node::All(items) => items.iter().all(|n| cond(n, cx)),
        Node::Any(items) => items.iter().any(|n| cond(n, cx)),
        Node::IsNull(op, negated) => matches!(operand(op, cx), V::Null) != *negated,
        Node::Team { teams, negated } => {
            let Some(agent) = cx.agent else { return false };
            agent.teams.iter().any(|t| teams.contains(t)) != *negated
        }
        Node::Cmp(op, lhs, rhs) => {
            let (a, b) = (operand(lhs, cx), operand(rhs, cx));
            match op {
                CmpOp::Eq => eq(a, b) == Some(true),
                CmpOp::Ne => eq(a, b) == Some(false),
                CmpOp::Lt => num_cmp(a, b, |o| o.is_lt()),
                CmpOp::Le => num_cmp(a, b, |o| o.is_le()),
                CmpOp::Gt => num_cmp(a, b, |o| o.is_gt()),
                CmpOp::Ge => num_cmp(a, b, |o| o.is_ge()),
                CmpOp::In => list_has(b, a) == Some(true),
                CmpOp::NotIn => list_has(b, a) == Some(false),
                CmpOp::Has => list_has(a, b) == Some(true),
                CmpOp::Contains => match (a, b) {
                    (V::Str(hay), V::Str(needle)) => contains_ci(hay, needle),
                    _ => false,
                },
            }
        }
    }
}

fn operand<'a>(op: &'a Operand, cx: Ctx<'a>) -> V<'a> {
    let opt_str = |s: &'a Option<String>| s.as_deref().map_or(V::Null, V::Str);
    match op {
        Operand::Null => V::Null,
        Operand::Lit(v) => v.into(),
        Operand::Cond(node) => V::Bool(cond(node, cx)),
        Operand::Conv(field) => {
            let Some(conv) = cx.conv else { return V::Null };
            match field {
                ConvField::Channel => V::Str(&conv.channel),
                ConvField::Inbox => V::Str(&conv.inbox),
                ConvField::Language => opt_str(&conv.language),
                ConvField::Labels => V::Strs(&conv.labels),
                // Priorities are small integers; the f64 conversion is exact for them.
                ConvField::Priority => V::Num(conv.priority as f64),
                ConvField::FirstMessage => opt_str(&conv.first_message),
            }
        }
        Operand::Contact(name) => cx
            .conv
            .and_then(|c| c.contact.get(name))
            .map_or(V::Null, V::from),
        Operand::Keyword(word) => match cx.conv.and_then(|c| c.first_message.as_deref()) {
            Some(text) => V::Bool(has_word(text, word)),
            None => V::Null,
        },
        Operand::Agent(field) => {
            let Some(agent) = cx.agent else {
                return V::Null;
            };
            match field {
                AgentField::Id => V::Str(&agent.id),
                AgentField::Teams => V::Strs(&agent.teams),
                AgentField::Branch => opt_str(&agent.branch),
            }
        }
        Operand::Skill(name) => level(cx.agent.and_then(|a| a.skills.get(name))),
        Operand::Lang(code) => level(cx.agent.and_then(|a| a.languages.get(code))),
    }
}

fn level(l: Option<&u8>) -> V<'static> {
    l.map_or(V::Null, |l| V::Num(f64::from(*l)))
}

/// Scalar equality; `None` when either side is null or the kinds differ.
fn eq(a: V<'_>, b: V<'_>) -> Option<bool> {
    match (a, b) {
        (V::Bool(x), V::Bool(y)) => Some(x == y),
        (V::Num(x), V::Num(y)) => Some(x == y),
        (V::Str(x), V::Str(y)) => Some(x == y),
        _ => None,
    }
}

fn num_cmp(a: V<'_>, b: V<'_>, test: fn(std::cmp::Ordering) -> bool) -> bool {
    match (a, b) {
        (V::Num(x), V::Num(y)) => x.partial_cmp(&y).is_some_and(test),
        _ => false,
    }
}

/// Whether `list` holds `x`; `None` when either is null or `list` is not a list.
fn list_has(list: V<'_>, x: V<'_>) -> Option<bool> {
    if matches!(x, V::Null) {
        return None;
    }
    match list {
        V::Strs(items) => Some(items.iter().any(|s| eq(V::Str(s), x) == Some(true))),
        V::Vals(items) => Some(items.iter().any(|v| eq(v.into(), x) == Some(true))),
        _ => None,
    }
}

/// If `hay` starts with `needle` compared case-insensitively, the byte length of the match.
fn match_prefix_ci(hay: &str, needle: &str) -> Option<usize> {
    let mut want = needle.chars().flat_map(char::to_lowercase).peekable();
    for (at, c) in hay.char_indices() {
        if want.peek().is_none() {
            return Some(at);
        }
        for lc in c.to_lowercase() {
            if want.next() != Some(lc) {
                return None;
            }
        }
    }
    want.peek().is_none().then_some(hay.len())
}

/// Case-insensitive substring test, without allocating.
pub(crate) fn contains_ci(hay: &str, needle: &str) -> bool {
    needle.is_empty()
        || hay
            .char_indices()
            .any(|(i, _)| match_prefix_ci(&hay[i..], needle).is_some())
}

/// Whether `text` contains `word` case-insensitively with a non-alphanumeric character (or
/// the text's edge) on both sides.
pub(crate) fn has_word(text: &str, word: &str) -> bool {
    let mut prev_alnum = false;
    for (i, c) in text.char_indices() {
        if !prev_alnum
            && let Some(len) = match_prefix_ci(&text[i..], word)
            && !text[i + len..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric)
        {
            return true;
        }
        prev_alnum = c.is_alphanumeric();
    }
    false
}

/// A target expression specialised to one conversation by [`super::TargetExpr::bind`].
#[derive(Debug, Clone)]
pub struct BoundTarget {
    node: Node,
}

impl BoundTarget {
    pub fn matches(&self, agent: &AgentView) -> bool {
        eval(&self.node, None, Some(agent))
    }

    /// `Some(result)` when the conversation alone already decided the outcome for every agent.
    pub fn constant(&self) -> Option<bool> {
        match self.node {
            Node::Const(b) => Some(b),
            _ => None,
        }
    }
}

pub(crate) fn bind(node: &Node, conv: &ConvView) -> BoundTarget {
    BoundTarget {
        node: bind_node(node, conv),
    }
}

fn bind_node(node: &Node, conv: &ConvView) -> Node {
    if !node_reads_agent(node) {
        return Node::Const(eval(node, Some(conv), None));
    }
    match node {
        Node::Not(inner) => match bind_node(inner, conv) {
            Node::Const(b) => Node::Const(!b),
            other => Node::Not(Box::new(other)),
        },
        Node::All(items) => fold(items, conv, true),
        Node::Any(items) => fold(items, conv, false),
        Node::Test(op) => Node::Test(bind_operand(op, conv)),
        Node::Cmp(op, a, b) => Node::Cmp(*op, bind_operand(a, conv), bind_operand(b, conv)),
        Node::IsNull(op, negated) => Node::IsNull(bind_operand(op, conv), *negated),
        Node::Const(_) | Node::Team { .. } => node.clone(),
    }
}

/// Binds an `All` (`all == true`) or `Any`, dropping decided members.
fn fold(items: &[Node], conv: &ConvView, all: bool) -> Node {
    let mut kept = Vec::new();
    for item in items {
        match bind_node(item, conv) {
            // In `All`, true is neutral and false decides; in `Any` the reverse.
            Node::Const(b) if b == all => {}
            Node::Const(b) => return Node::Const(b),
            other => kept.push(other),
        }
    }
    match kept.len() {
        0 => Node::Const(all),
        1 => kept.pop().unwrap_or(Node::Const(all)),
        _ if all => Node::All(kept),
        _ => Node::Any(kept),
    }
}

fn bind_operand(op: &Operand, conv: &ConvView) -> Operand {
    if let Operand::Cond(node) = op {
        return Operand::Cond(Box::new(bind_node(node, conv)));
    }
    if operand_reads_agent(op) {
        return op.clone();
    }
    match operand(
        op,
        Ctx {
            conv: Some(conv),
            agent: None,
        },
    ) {
        V::Null => Operand::Null,
        V::Bool(b) => Operand::Lit(Value::Bool(b)),
        V::Num(n) => Operand::Lit(Value::Number(n)),
        V::Str(s) => Operand::Lit(Value::String(s.to_owned())),
        V::Strs(items) => Operand::Lit(Value::List(
            items.iter().map(|s| Value::String(s.clone())).collect(),
        )),
        V::Vals(items) => Operand::Lit(Value::List(items.to_vec())),
    }
}

/// Whether evaluating `node` reads the conversation at all (a target that does not is the same
/// for every conversation).
pub(crate) fn node_reads_conv(node: &Node) -> bool {
    match node {
        Node::Const(_) | Node::Team { .. } => false,
        Node::Test(op) | Node::IsNull(op, _) => operand_reads_conv(op),
        Node::Not(inner) => node_reads_conv(inner),
        Node::All(items) | Node::Any(items) => items.iter().any(node_reads_conv),
        Node::Cmp(_, a, b) => operand_reads_conv(a) || operand_reads_conv(b),
    }
}

fn operand_reads_conv(op: &Operand) -> bool {
    match op {
        Operand::Conv(_) | Operand::Contact(_) | Operand::Keyword(_) => true,
        Operand::Cond(node) => node_reads_conv(node),
        Operand::Null
        | Operand::Lit(_)
        | Operand::Agent(_)
        | Operand::Skill(_)
        | Operand::Lang(_) => false,
    }
}

fn node_reads_agent(node: &Node) -> bool {
    match node {
        Node::Const(_) => false,
        Node::Team { .. } => true,
        Node::Test(op) | Node::IsNull(op, _) => operand_reads_agent(op),
        Node::Not(inner) => node_reads_agent(inner),
        Node::All(items) | Node::Any(items) => items.iter().any(node_reads_agent),
        Node::Cmp(_, a, b) => operand_reads_agent(a) || operand_reads_agent(b),
    }
}

fn operand_reads_agent(op: &Operand) -> bool {
    match op {
        Operand::Agent(_) | Operand::Skill(_) | Operand::Lang(_) => true,
        Operand::Cond(node) => node_reads_agent(node),
        _ => false,
    }
}
