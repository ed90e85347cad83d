//! Type checking against the [`Schema`] and lowering to the compiled [`Node`] in one pass.
//!
//! Errors are collected rather than returned at the first one; a sub-expression that already
//! failed has no type (`None`), which keeps one mistake from cascading into several messages.

use super::ast::{CmpOp, Expr, ExprKind, Literal, Namespace, Path};
use super::eval::{AgentField, ConvField, Node, Operand};
use super::schema::{CHANNELS, Schema, Type, Value};
use super::{Kind, Span};

type Errors = Vec<(Span, String)>;

pub(crate) fn check(expr: &Expr, kind: Kind, schema: &Schema) -> Result<Node, Errors> {
    let mut checker = Checker {
        kind,
        schema,
        errors: Vec::new(),
    };
    let node = checker.cond(expr);
    if checker.errors.is_empty() {
        Ok(node)
    } else {
        Err(checker.errors)
    }
}

/// The static type of an operand; `team` is its own thing (see the module docs of `expr`).
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Plain(Type),
    Team,
}

const CONV_FIELDS: &str =
    "channel, inbox, language, labels, priority, first_message, contact.<attribute>";
const AGENT_FIELDS: &str =
    "id, teams, team, branch (skills and languages through skill() and lang())";
const TEAM_USE: &str = "`team` tests membership in `agent.teams`; it takes only `==`, `!=`, `in` or `not in` with string literals";

struct Checker<'s> {
    kind: Kind,
    schema: &'s Schema,
    errors: Errors,
}

impl Checker<'_> {
    fn error(&mut self, span: Span, message: String) {
        self.errors.push((span, message));
    }

    /// Refuses a skill or team name the account does not have, when the schema lists them.
    fn known(&mut self, what: &str, name: &str, span: Span) {
        let list = if what == "skill" {
            &self.schema.skills
        } else {
            &self.schema.teams
        };
        if let Some(list) = list
            && !list.contains(name)
        {
            let names: Vec<&str> = list.iter().map(String::as_str).take(20).collect();
            let known = if names.is_empty() {
                "none yet".to_owned()
            } else {
                names.join(", ")
            };
            self.error(
                span,
                format!("unknown {what} `{name}`; the account's: {known}"),
            );
        }
    }

    /// `e` in a position that needs a condition (Bool).
    fn cond(&mut self, e: &Expr) -> Node {
        match &e.kind {
            ExprKind::Not(inner) => Node::Not(Box::new(self.cond(inner))),
            ExprKind::And(items) => Node::All(items.iter().map(|i| self.cond(i)).collect()),
            ExprKind::Or(items) => Node::Any(items.iter().map(|i| self.cond(i)).collect()),
            ExprKind::Compare { op, lhs, rhs } => self.compare(*op, lhs, rhs),
            ExprKind::IsNull { operand, negated } => {
                let (op, ty) = self.operand(operand);
                if ty == Some(Ty::Team) {
                    self.error(operand.span, TEAM_USE.into());
                }
                Node::IsNull(op, *negated)
            }
            _ => {
                let (op, ty) = self.operand(e);
                match ty {
                    Some(Ty::Plain(Type::Bool)) | None => {}
                    Some(Ty::Team) => self.error(e.span, TEAM_USE.into()),
                    Some(Ty::Plain(other)) => self.error(
                        e.span,
                        format!("expected a condition (Bool), but `{e}` is a {other}"),
                    ),
                }
                Node::Test(op)
            }
        }
    }

    /// `e` in a value position: its compiled operand and its type (`None` after an error).
    fn operand(&mut self, e: &Expr) -> (Operand, Option<Ty>) {
        match &e.kind {
            ExprKind::Literal(lit) => {
                let (value, ty) = literal(lit);
                (Operand::Lit(value), Some(Ty::Plain(ty)))
            }
            ExprKind::List(_) => {
                self.error(e.span, "a list can only follow `in` or `not in`".into());
                (Operand::Null, None)
            }
            ExprKind::Path(path) => match self.path(path, e.span) {
                Some((op, ty)) => (op, Some(ty)),
                None => (Operand::Null, None),
            },
            ExprKind::Call { name, args } => match self.call(name, args, e.span) {
                Some((op, ty)) => (op, Some(Ty::Plain(ty))),
                None => (Operand::Null, None),
            },
            ExprKind::Not(_)
            | ExprKind::And(_)
            | ExprKind::Or(_)
            | ExprKind::Compare { .. }
            | ExprKind::IsNull { .. } => {
                let errors = self.errors.len();
                let node = self.cond(e);
                let ty = (self.errors.len() == errors).then_some(Ty::Plain(Type::Bool));
                (Operand::Cond(Box::new(node)), ty)
            }
        }
    }

    fn compare(&mut self, op: CmpOp, lhs: &Expr, rhs: &Expr) -> Node {
        if let (CmpOp::In | CmpOp::NotIn, ExprKind::List(items)) = (op, &rhs.kind) {
            return self.in_list(op, lhs, items);
        }
        let (a, ta) = self.operand(lhs);
        let (b, tb) = self.operand(rhs);
        if ta == Some(Ty::Team) || tb == Some(Ty::Team) {
            return self.team_compare(op, (lhs, &ta), (rhs, &tb), &b, &a);
        }
        let (Some(Ty::Plain(ta)), Some(Ty::Plain(tb))) = (ta, tb) else {
            return Node::Cmp(op, a, b);
        };
        let scalar = |t: &Type| !matches!(t, Type::List(_));
        let problem = match op {
            CmpOp::Eq | CmpOp::Ne if !scalar(&ta) || !scalar(&tb) => Some(format!(
                "`{}` compares single values; for lists use `has`, `in` or `not in`",
                op.as_str()
            )),
            CmpOp::Eq | CmpOp::Ne if ta != tb => Some(mismatch(lhs, &ta, rhs, &tb)),
            CmpOp::Eq | CmpOp::Ne => {
                self.channel_literal(&a, rhs);
                self.channel_literal(&b, lhs);
                None
            }
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
                if ta == Type::Number && tb == Type::Number {
                    None
                } else if ta == tb {
                    Some(format!("`{}` orders Numbers, not {ta} values", op.as_str()))
                } else {
                    Some(mismatch(lhs, &ta, rhs, &tb))
                }
            }
            CmpOp::In | CmpOp::NotIn => match &tb {
                Type::List(of) if **of == ta => None,
                Type::List(of) => Some(format!("`{lhs}` is a {ta} but `{rhs}` holds {of} values")),
                _ => Some(format!(
                    "`{}` needs a list on its right, but `{rhs}` is a {tb}",
                    op.as_str()
                )),
            },
            CmpOp::Has => match &ta {
                Type::List(of) if **of == tb => None,
                Type::List(of) => Some(format!("`{lhs}` holds {of} values but `{rhs}` is a {tb}")),
                _ => Some(format!(
                    "`has` needs a list on its left, but `{lhs}` is a {ta}"
                )),
            },
            CmpOp::Contains if ta == Type::String && tb == Type::String => None,
            CmpOp::Contains => Some(format!(
                "`contains` looks for text in text, but here it has a {ta} and a {tb}"
            )),
        };
        if let Some(message) = problem {
            self.error(lhs.span.to(rhs.span), message);
        }
        match (op, &a, &b) {
            (CmpOp::Has, Operand::Agent(AgentField::Teams), Operand::Lit(Value::String(t))) => {
                self.known("team", t, rhs.span);
            }
            (CmpOp::In, Operand::Lit(Value::String(t)), Operand::Agent(AgentField::Teams)) => {
                self.known("team", t, lhs.span);
            }
            _ => {}
        }
        Node::Cmp(op, a, b)
    }

    /// `x in [..]` / `x not in [..]` with a list literal: every element must have `x`'s type.
    fn in_list(&mut self, op: CmpOp, lhs: &Expr, items: &[Expr]) -> Node {
        let (a, ta) = self.operand(lhs);
        let want = match &ta {
            Some(Ty::Team) => Some(Type::String),
            Some(Ty::Plain(Type::List(_))) => {
                self.error(
                    lhs.span,
                    format!("`{lhs}` is a list; test its members with `has`"),
                );
                None
            }
            Some(Ty::Plain(t)) => Some(t.clone()),
            None => None,
        };
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let ExprKind::Literal(lit) = &item.kind else {
                continue;
            };
            let (value, ty) = literal(lit);
            if let Some(want) = want.as_ref().filter(|w| **w != ty) {
                self.error(
                    item.span,
                    format!("`{lhs}` is a {want}, but `{item}` is a {ty}"),
                );
            }
            self.channel_literal(&a, item);
            if let (Some(Ty::Team), Value::String(team)) = (&ta, &value) {
                self.known("team", team, item.span);
            }
            values.push(value);
        }
        if ta == Some(Ty::Team) {
            let teams = values
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect();
            return Node::Team {
                teams,
                negated: op == CmpOp::NotIn,
            };
        }
        Node::Cmp(op, a, Operand::Lit(Value::List(values)))
    }

    /// `team == "x"` and `team != "x"`, in either order; anything else is an error.
    fn team_compare(
        &mut self,
        op: CmpOp,
        (lhs, ta): (&Expr, &Option<Ty>),
        (rhs, tb): (&Expr, &Option<Ty>),
        b: &Operand,
        a: &Operand,
    ) -> Node {
        let other = if *ta == Some(Ty::Team) {
            (rhs, tb, b)
        } else {
            (lhs, ta, a)
        };
        match (op, other) {
            (CmpOp::Eq | CmpOp::Ne, (expr, _, Operand::Lit(Value::String(team)))) => {
                self.known("team", team, expr.span);
                Node::Team {
                    teams: vec![team.clone()],
                    negated: op == CmpOp::Ne,
                }
            }
            (_, (_, None, _)) => Node::Const(false),
            _ => {
                self.error(lhs.span.to(rhs.span), TEAM_USE.into());
                Node::Const(false)
            }
        }
    }

    /// Rejects a string literal that is not a channel when compared with `conv.channel`.
    fn channel_literal(&mut self, field: &Operand, other: &Expr) {
        if !matches!(field, Operand::Conv(ConvField::Channel)) {
            return;
        }
        if let ExprKind::Literal(Literal::String(s)) = &other.kind
            && !CHANNELS.contains(&s.as_str())
        {
            let known = CHANNELS.join(", ");
            self.error(
                other.span,
                format!("unknown channel \"{s}\"; expected one of {known}"),
            );
        }
    }

    fn path(&mut self, path: &Path, span: Span) -> Option<(Operand, Ty)> {
        let own = match self.kind {
            Kind::Match => Namespace::Conv,
            Kind::Target => Namespace::Agent,
        };
        let fields: Vec<&str> = path.fields.iter().map(String::as_str).collect();
        match path.namespace.unwrap_or(own) {
            Namespace::Agent if self.kind == Kind::Match => {
                self.error(
                    span,
                    format!(
                        "a match expression reads only the conversation; `{path}` is an agent field (agents belong in a step's target expression)"
                    ),
                );
                None
            }
            Namespace::Conv => self.conv_field(path, &fields, span),
            Namespace::Agent => self.agent_field(path, &fields, span),
        }
    }

    fn conv_field(&mut self, path: &Path, fields: &[&str], span: Span) -> Option<(Operand, Ty)> {
        let (field, ty) = match fields[0] {
            "channel" => (ConvField::Channel, Type::String),
            "inbox" => (ConvField::Inbox, Type::String),
            "language" => (ConvField::Language, Type::String),
            "labels" => (ConvField::Labels, Type::list(Type::String)),
            "priority" => (ConvField::Priority, Type::Number),
            "first_message" => (ConvField::FirstMessage, Type::String),
            "contact" => return self.contact(path, fields, span),
            other => {
                self.error(
                    span,
                    format!("unknown conversation field `{other}`; known: {CONV_FIELDS}"),
                );
                return None;
            }
        };
        self.no_subfields(path, fields, 1, span)?;
        Some((Operand::Conv(field), Ty::Plain(ty)))
    }

    fn contact(&mut self, path: &Path, fields: &[&str], span: Span) -> Option<(Operand, Ty)> {
        let Some(name) = fields.get(1) else {
            let message =
                format!("`{path}` is the group of contact attributes; name one, e.g. `{path}.vip`");
            self.error(span, message);
            return None;
        };
        let Some(ty) = self.schema.contact.get(*name) else {
            let declared: Vec<&str> = self.schema.contact.keys().map(String::as_str).collect();
            let declared = if declared.is_empty() {
                "none are declared".into()
            } else {
                format!("declared: {}", declared.join(", "))
            };
            self.error(
                span,
                format!("unknown contact attribute `{name}`; {declared}"),
            );
            return None;
        };
        self.no_subfields(path, fields, 2, span)?;
        Some((Operand::Contact((*name).to_owned()), Ty::Plain(ty.clone())))
    }

    fn agent_field(&mut self, path: &Path, fields: &[&str], span: Span) -> Option<(Operand, Ty)> {
        let (op, ty) = match fields[0] {
            "id" => (Operand::Agent(AgentField::Id), Ty::Plain(Type::String)),
            "teams" => (
                Operand::Agent(AgentField::Teams),
                Ty::Plain(Type::list(Type::String)),
            ),
            "team" => (Operand::Null, Ty::Team),
            "branch" => (Operand::Agent(AgentField::Branch), Ty::Plain(Type::String)),
            "skills" | "languages" => {
                let func = if fields[0] == "skills" {
                    "skill"
                } else {
                    "lang"
                };
                self.error(
                    span,
                    format!("read agent {} with `{func}(\"…\")`", fields[0]),
                );
                return None;
            }
            other => {
                let hint = if path.namespace.is_none() {
                    " (conversation fields need the `conv.` prefix here)"
                } else {
                    ""
                };
                self.error(
                    span,
                    format!("unknown agent field `{other}`; known: {AGENT_FIELDS}{hint}"),
                );
                return None;
            }
        };
        self.no_subfields(path, fields, 1, span)?;
        Some((op, ty))
    }

    fn no_subfields(
        &mut self,
        path: &Path,
        fields: &[&str],
        depth: usize,
        span: Span,
    ) -> Option<()> {
        if let Some(extra) = fields.get(depth) {
            let parent = Path {
                namespace: path.namespace,
                fields: path.fields[..depth].to_vec(),
            };
            self.error(span, format!("`{parent}` has no field `{extra}`"));
            return None;
        }
        Some(())
    }

    fn call(&mut self, name: &str, args: &[Expr], span: Span) -> Option<(Operand, Type)> {
        if !matches!(name, "skill" | "lang" | "keyword") {
            self.error(
                span,
                format!("unknown function `{name}`; known: skill, lang, keyword"),
            );
            return None;
        }
        if name != "keyword" && self.kind == Kind::Match {
            let message = format!(
                "`{name}()` reads the agent; a match expression reads only the conversation"
            );
            self.error(span, message);
            return None;
        }
        if args.len() != 1 {
            self.error(
                span,
                format!("`{name}()` takes 1 argument, got {}", args.len()),
            );
            return None;
        }
        let ExprKind::Literal(Literal::String(arg)) = &args[0].kind else {
            self.error(
                args[0].span,
                format!("`{name}()` takes a quoted name, e.g. {name}(\"billing\")"),
            );
            return None;
        };
        match name {
            "skill" => {
                self.known("skill", arg, args[0].span);
                Some((Operand::Skill(arg.clone()), Type::Number))
            }
            "lang" => Some((Operand::Lang(arg.clone()), Type::Number)),
            _ if arg.trim().is_empty() => {
                self.error(args[0].span, "`keyword()` needs a word".into());
                None
            }
            _ => Some((Operand::Keyword(arg.clone()), Type::Bool)),
        }
    }
}

fn literal(lit: &Literal) -> (Value, Type) {
    match lit {
        Literal::Bool(b) => (Value::Bool(*b), Type::Bool),
        Literal::Number(n) => (Value::Number(*n), Type::Number),
        Literal::String(s) => (Value::String(s.clone()), Type::String),
    }
}

fn mismatch(lhs: &Expr, ta: &Type, rhs: &Expr, tb: &Type) -> String {
    format!("cannot compare `{lhs}` (a {ta}) with `{rhs}` (a {tb})")
}
