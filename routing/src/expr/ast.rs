//! The syntax tree as parsed, before any schema is consulted, and its canonical printed form.
//!
//! Every node carries the [`Span`] of its source text for diagnostics. Equality ignores spans:
//! two trees are equal when they have the same structure, which is what the
//! print → parse round trip promises.

use std::fmt;

use super::Span;
use super::lexer::is_plain_ident;

/// One node of a rule expression.
#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Self {
        Expr { kind, span }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    /// `["a", "b"]`; the parser only admits literals as elements.
    List(Vec<Expr>),
    Path(Path),
    Call {
        name: String,
        args: Vec<Expr>,
    },
    Not(Box<Expr>),
    /// Two or more operands; `a and b and c` is one node.
    And(Vec<Expr>),
    /// Two or more operands.
    Or(Vec<Expr>),
    Compare {
        op: CmpOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `x is null` (`negated: false`) or `x is not null`.
    IsNull {
        operand: Box<Expr>,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Bool(bool),
    Number(f64),
    String(String),
}

/// The namespace a path names explicitly. A bare path has none and resolves to the expression
/// kind's own namespace (see [`super::Kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Conv,
    Agent,
}

/// `conv.contact."tier-2"` is `Path { namespace: Some(Conv), fields: ["contact", "tier-2"] }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub namespace: Option<Namespace>,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Has,
    Contains,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
            CmpOp::Has => "has",
            CmpOp::Contains => "contains",
        }
    }
}

/// Binding strength, loosest first; used to decide where the printer needs parentheses.
fn precedence(kind: &ExprKind) -> u8 {
    match kind {
        ExprKind::Or(_) => 1,
        ExprKind::And(_) => 2,
        ExprKind::Not(_) => 3,
        ExprKind::Compare { .. } | ExprKind::IsNull { .. } => 4,
        _ => 5,
    }
}

impl Expr {
    /// Prints `self` as an operand of a construct binding at `min`: parenthesised when it binds
    /// no tighter than that, so the printed text parses back to the same tree.
    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        if precedence(&self.kind) <= min {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// The canonical form: lowercase keywords, double-quoted strings, single spaces around
/// operators, and only the parentheses the tree needs.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Literal(lit) => write!(f, "{lit}"),
            ExprKind::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            ExprKind::Path(path) => write!(f, "{path}"),
            ExprKind::Call { name, args } => {
                write!(f, "{name}(")?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
            ExprKind::Not(inner) => {
                f.write_str("not ")?;
                // `not` binds looser than comparisons, so only `and`/`or` need parentheses.
                inner.fmt_operand(f, 2)
            }
            ExprKind::And(items) | ExprKind::Or(items) => {
                let (word, prec) = if matches!(self.kind, ExprKind::And(_)) {
                    (" and ", 2)
                } else {
                    (" or ", 1)
                };
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(word)?;
                    }
                    item.fmt_operand(f, prec)?;
                }
                Ok(())
            }
            ExprKind::Compare { op, lhs, rhs } => {
                lhs.fmt_operand(f, 4)?;
                write!(f, " {} ", op.as_str())?;
                rhs.fmt_operand(f, 4)
            }
            ExprKind::IsNull { operand, negated } => {
                operand.fmt_operand(f, 4)?;
                f.write_str(if *negated { " is not null" } else { " is null" })
            }
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            // Rust prints the shortest text that parses back to the same f64, never with an
            // exponent, so the lexer reads it back exactly.
            Literal::Number(n) => write!(f, "{n}"),
            Literal::String(s) => write_quoted(f, s),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace {
            Some(Namespace::Conv) => f.write_str("conv.")?,
            Some(Namespace::Agent) => f.write_str("agent.")?,
            None => {}
        }
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            if is_plain_ident(field) {
                f.write_str(field)?
            } else {
                write_quoted(f, field)?
            }
        }
        Ok(())
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}
