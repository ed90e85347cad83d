//! The routing-rule expression language (ROUTING.md §10.2): parsed, type-checked against a
//! declared [`Schema`] when an administrator saves a rule, compiled once, then evaluated many
//! times per decision.
//!
//! # Two kinds of expression
//!
//! * A **match** expression ([`MatchExpr`]) decides whether a rule applies to a conversation.
//!   It reads `conv.*` only; bare names mean `conv.<name>`.
//! * A **target** expression ([`TargetExpr`]) decides whether an agent is eligible for a step.
//!   It reads `agent.*` and `conv.*`; bare names mean `agent.<name>`.
//!
//! # Grammar
//!
//! ```text
//! rule       = or
//! or         = and ("or" and)*
//! and        = not ("and" not)*
//! not        = "not" not | comparison
//! comparison = primary ( ("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
//!                         | "has" | "contains") primary
//!                      | "is" ["not"] "null" )?
//! primary    = string | number | "true" | "false" | list | call | path | "(" or ")"
//! list       = "[" [literal ("," literal)* [","]] "]"
//! call       = ident "(" [or ("," or)*] ")"
//! path       = ["conv" "." | "agent" "."] field ("." (ident | string))*
//! string     = '"' … '"' | "'" … "'"      escapes: \\ \" \' \n \t \r
//! number     = ["-"] digits ["." digits]
//! ```
//!
//! Keywords (`and or not in has contains is null true false`) are case-insensitive; field
//! names, function names and string values are not. Comparisons do not chain (`a < b < c` is
//! an error). Odd field names are quoted: `conv.contact."tier-2"`.
//!
//! # Types
//!
//! Bool, Number (integers and decimals alike), String, List<T>. Conversation fields:
//! `channel` (String, one of [`CHANNELS`]), `inbox`, `language`, `first_message` (String),
//! `labels` (List<String>), `priority` (Number), `contact.<attr>` (as the schema declares).
//! Agent fields: `id`, `branch` (String), `teams` (List<String>), `team` (see below).
//! Functions: `skill("name")` and `lang("code")` (target only, Number 0–5, null when the agent
//! lacks it), `keyword("word")` (Bool: the first customer message contains the word,
//! case-insensitively, at word boundaries). Function arguments must be string literals.
//!
//! * `==` `!=`: both sides of one scalar type. `<` `<=` `>` `>=`: Numbers.
//! * `x in [..]`, `x not in [..]`: `x` a scalar T, the right side a list literal of T or a
//!   List<T> field. `list has x`: the reverse. `s contains t`: Strings, case-insensitive.
//! * `x is null`, `x is not null`: any operand.
//! * `and`, `or`, `not` and the whole rule: Bool.
//! * `team` is a convenience: `team == "payments"` means "`payments` is one of `agent.teams`";
//!   `!=`, `in` and `not in` likewise test membership. It takes no other operator.
//! * A string literal compared with `conv.channel` must name a known channel.
//!
//! All type errors are reported together, each with its position; a syntax error stops
//! parsing, so only the first is reported.
//!
//! # Null
//!
//! A missing attribute, skill or language is null, and so is a value whose runtime type
//! disagrees with the schema. Every comparison with null is false, except `is null` and
//! `is not null`; a null Bool used as a condition is false. So with `x` null, `x == 1`,
//! `x != 1` and `x not in [1]` are all false, while `not (x == 1)` is true.
//!
//! # Cost
//!
//! Compilation resolves every name to an enum or a map key once. Evaluation walks the
//! compiled tree without allocating: field reads borrow from the views, `skill`/`lang` are one
//! `BTreeMap` lookup each, `in [..]` is a linear scan of the literal list, `contains` and
//! `keyword` compare case-insensitively in place. For one conversation against many agents,
//! [`TargetExpr::bind`] folds everything that reads only the conversation (e.g. `keyword`)
//! into constants first, so the per-agent work is the agent-dependent part alone.

mod ast;
mod check;
mod eval;
mod lexer;
mod parser;
mod requirements;
mod schema;

#[cfg(test)]
mod tests;

use std::fmt;

pub use ast::{CmpOp, Expr, ExprKind, Literal, Namespace, Path};
pub use eval::BoundTarget;
pub use parser::MAX_DEPTH;
pub use requirements::Requirements;
pub use schema::{AgentView, CHANNELS, ConvView, Schema, Type, Value};

/// A byte range of the rule source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// Which namespace an expression is about; decides what bare names mean and what may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A rule's match expression: `conv.*` only.
    Match,
    /// A step's target expression: `agent.*` and `conv.*`.
    Target,
}

/// One problem with a rule, located for the admin UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    /// 1-based line of `span.start`.
    pub line: usize,
    /// 1-based column of `span.start`, counted in characters.
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    fn new(src: &str, span: Span, message: String) -> Self {
        let start = floor_char_boundary(src, span.start.min(src.len()));
        let before = &src[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Diagnostic {
            span,
            line,
            column,
            message,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Why a rule was rejected: at least one diagnostic, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_all(.0))]
pub struct RuleError(pub Vec<Diagnostic>);

fn display_all(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses `src` without checking it against any schema.
pub fn parse(src: &str) -> Result<Expr, RuleError> {
    parser::parse(src).map_err(|e| RuleError(vec![Diagnostic::new(src, e.span, e.message)]))
}

fn compile(src: &str, kind: Kind, schema: &Schema) -> Result<(Expr, eval::Node), RuleError> {
    let expr = parse(src)?;
    match check::check(&expr, kind, schema) {
        Ok(node) => Ok((expr, node)),
        Err(errors) => {
            let mut diags: Vec<_> = errors
                .into_iter()
                .map(|(span, msg)| Diagnostic::new(src, span, msg))
                .collect();
            diags.sort_by_key(|d| d.span.start);
            Err(RuleError(diags))
        }
    }
}

/// A rule's compiled match expression over the conversation.
#[derive(Debug, Clone)]
pub struct MatchExpr {
    expr: Expr,
    node: eval::Node,
}

impl MatchExpr {
    pub fn compile(src: &str, schema: &Schema) -> Result<Self, RuleError> {
        let (expr, node) = compile(src, Kind::Match, schema)?;
        Ok(MatchExpr { expr, node })
    }

    pub fn matches(&self, conv: &ConvView) -> bool {
        eval::eval(&self.node, Some(conv), None)
    }

    pub fn ast(&self) -> &Expr {
        &self.expr
    }
}

impl fmt::Display for MatchExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

/// A step's compiled target expression over agents (and the conversation).
#[derive(Debug, Clone)]
pub struct TargetExpr {
    expr: Expr,
    node: eval::Node,
    requirements: Requirements,
}

impl TargetExpr {
    pub fn compile(src: &str, schema: &Schema) -> Result<Self, RuleError> {
        let (expr, node) = compile(src, Kind::Target, schema)?;
        let requirements = requirements::extract(&node);
        Ok(TargetExpr {
            expr,
            node,
            requirements,
        })
    }

    /// Whether `agent` is eligible for `conv`. For many agents, [`Self::bind`] once instead.
    pub fn matches(&self, conv: &ConvView, agent: &AgentView) -> bool {
        eval::eval(&self.node, Some(conv), Some(agent))
    }

    /// Specialises the expression to one conversation: every part that reads only the
    /// conversation is evaluated now, leaving the per-agent remainder.
    pub fn bind(&self, conv: &ConvView) -> BoundTarget {
        eval::bind(&self.node, conv)
    }

    /// Whether the expression reads the conversation; when not, which agents it selects is
    /// the same for every conversation and the engine may compute it once.
    pub(crate) fn reads_conv(&self) -> bool {
        eval::node_reads_conv(&self.node)
    }

    /// The indexable hard requirements among the top-level conjuncts.
    pub fn requirements(&self) -> &Requirements {
        &self.requirements
    }

    pub fn ast(&self) -> &Expr {
        &self.expr
    }
}

impl fmt::Display for TargetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}
