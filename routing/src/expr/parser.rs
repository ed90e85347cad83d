//! Tokens to [`Expr`] by recursive descent, one function per precedence level:
//! `or` < `and` < `not` < comparison < primary. Parsing stops at the first error (the type
//! checker is where all errors are gathered). Nesting is capped at [`MAX_DEPTH`] so hostile
//! input cannot exhaust the stack here or in the passes that walk the tree.

use super::Span;
use super::ast::{CmpOp, Expr, ExprKind, Literal, Namespace, Path};
use super::lexer::{Tok, lex};

/// How deeply parentheses, `not`, calls and lists may nest.
pub const MAX_DEPTH: usize = 64;

/// A syntax error: the first one found.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub span: Span,
    pub message: String,
}

pub(crate) fn parse(src: &str) -> Result<Expr, SyntaxError> {
    let toks = lex(src).map_err(|e| SyntaxError {
        span: e.span,
        message: e.message,
    })?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let expr = p.or()?;
    match p.peek() {
        Tok::Eof => Ok(expr),
        Tok::RParen => Err(p.error_here("this `)` has no matching `(`")),
        other => {
            let msg = format!(
                "expected `and`, `or` or the end of the rule, found {}",
                other.describe()
            );
            Err(p.error_here(&msg))
        }
    }
}

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
    depth: usize,
}

type PResult<T> = Result<T, SyntaxError>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.toks[(self.pos + ahead).min(self.toks.len() - 1)].0
    }

    fn span(&self) -> Span {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    /// Consumes the current token and returns it with its span; `Eof` is never consumed.
    fn bump(&mut self) -> (Tok, Span) {
        let tok = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        if tok.0 != Tok::Eof {
            self.pos += 1;
        }
        tok
    }

    fn error_here(&self, message: &str) -> SyntaxError {
        SyntaxError {
            span: self.span(),
            message: message.to_owned(),
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> PResult<Span> {
        if *self.peek() == tok {
            Ok(self.bump().1)
        } else {
            Err(self.error_here(&format!(
                "expected {what}, found {}",
                self.peek().describe()
            )))
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(&format!("the rule nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn or(&mut self) -> PResult<Expr> {
        self.chain(Tok::Or, Self::and, ExprKind::Or)
    }

    fn and(&mut self) -> PResult<Expr> {
        self.chain(Tok::And, Self::not, ExprKind::And)
    }

    /// `item (sep item)*` as one n-ary node, or the lone item.
    fn chain(
        &mut self,
        sep: Tok,
        item: fn(&mut Self) -> PResult<Expr>,
        make: fn(Vec<Expr>) -> ExprKind,
    ) -> PResult<Expr> {
        let first = item(self)?;
        if *self.peek() != sep {
            return Ok(first);
        }
        let mut items = vec![first];
        while *self.peek() == sep {
            self.bump();
            items.push(item(self)?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Expr::new(make(items), span))
    }

    fn not(&mut self) -> PResult<Expr> {
        if *self.peek() != Tok::Not {
            return self.comparison();
        }
        let (_, start) = self.bump();
        self.enter()?;
        let inner = self.not()?;
        self.depth -= 1;
        let span = start.to(inner.span);
        Ok(Expr::new(ExprKind::Not(Box::new(inner)), span))
    }

    fn comparison(&mut self) -> PResult<Expr> {
        let lhs = self.primary()?;
        let op = match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::In => CmpOp::In,
            Tok::Has => CmpOp::Has,
            Tok::Contains => CmpOp::Contains,
            Tok::Not if *self.peek_at(1) == Tok::In => CmpOp::NotIn,
            Tok::Not => return Err(self.error_here("`not` here must be followed by `in`")),
            Tok::Is => return self.is_null(lhs),
            _ => return Ok(lhs),
        };
        self.bump();
        if op == CmpOp::NotIn {
            self.bump();
        }
        let rhs = self.primary()?;
        if is_comparison_op(self.peek()) {
            return Err(self.error_here("comparisons cannot be chained; use `and` or parentheses"));
        }
        let span = lhs.span.to(rhs.span);
        Ok(Expr::new(
            ExprKind::Compare {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            span,
        ))
    }

    fn is_null(&mut self, operand: Expr) -> PResult<Expr> {
        self.bump();
        let negated = *self.peek() == Tok::Not;
        if negated {
            self.bump();
        }
        let end = self.expect(Tok::Null, "`null` after `is`")?;
        if is_comparison_op(self.peek()) {
            return Err(self.error_here("comparisons cannot be chained; use `and` or parentheses"));
        }
        let span = operand.span.to(end);
        Ok(Expr::new(
            ExprKind::IsNull {
                operand: Box::new(operand),
                negated,
            },
            span,
        ))
    }

    fn primary(&mut self) -> PResult<Expr> {
        let (tok, span) = self.bump();
        let lit = |l| Ok(Expr::new(ExprKind::Literal(l), span));
        match tok {
            Tok::Str(s) => lit(Literal::String(s)),
            Tok::Num(n) => lit(Literal::Number(n)),
            Tok::True => lit(Literal::Bool(true)),
            Tok::False => lit(Literal::Bool(false)),
            Tok::LParen => {
                self.enter()?;
                let mut inner = self.or()?;
                let end = self.expect(Tok::RParen, "`)`")?;
                self.depth -= 1;
                // The tree has no parenthesis node; the span widens to cover them.
                inner.span = span.to(end);
                Ok(inner)
            }
            Tok::LBracket => self.list(span),
            Tok::Ident(name) if *self.peek() == Tok::LParen => self.call(name, span),
            Tok::Ident(name) => self.path(name, span),
            Tok::Null => Err(SyntaxError {
                span,
                message: "`null` is not a value; test with `is null` or `is not null`".into(),
            }),
            Tok::Eof => Err(SyntaxError {
                span,
                message: "the rule ends too early".into(),
            }),
            other => Err(SyntaxError {
                span,
                message: format!(
                    "expected a value, a field or `(`, found {}",
                    other.describe()
                ),
            }),
        }
    }

    fn list(&mut self, start: Span) -> PResult<Expr> {
        self.enter()?;
        let mut items = Vec::new();
        while *self.peek() != Tok::RBracket {
            let (tok, span) = self.bump();
            let lit = match tok {
                Tok::Str(s) => Literal::String(s),
                Tok::Num(n) => Literal::Number(n),
                Tok::True => Literal::Bool(true),
                Tok::False => Literal::Bool(false),
                other => {
                    let message = format!(
                        "a list holds only strings, numbers and booleans, found {}",
                        other.describe()
                    );
                    return Err(SyntaxError { span, message });
                }
            };
            items.push(Expr::new(ExprKind::Literal(lit), span));
            if *self.peek() == Tok::Comma {
                self.bump();
            } else if *self.peek() != Tok::RBracket {
                return Err(self.error_here(&format!(
                    "expected `,` or `]` in the list, found {}",
                    self.peek().describe()
                )));
            }
        }
        let end = self.bump().1;
        self.depth -= 1;
        Ok(Expr::new(ExprKind::List(items), start.to(end)))
    }

    fn call(&mut self, name: String, start: Span) -> PResult<Expr> {
        self.bump(); // `(`
        self.enter()?;
        let mut args = Vec::new();
        while *self.peek() != Tok::RParen {
            args.push(self.or()?);
            if *self.peek() == Tok::Comma {
                self.bump();
            } else if *self.peek() != Tok::RParen {
                return Err(self.error_here(&format!(
                    "expected `,` or `)` after an argument, found {}",
                    self.peek().describe()
                )));
            }
        }
        let end = self.bump().1;
        self.depth -= 1;
        Ok(Expr::new(ExprKind::Call { name, args }, start.to(end)))
    }

    fn path(&mut self, first: String, start: Span) -> PResult<Expr> {
        let namespace = match first.as_str() {
            "conv" => Some(Namespace::Conv),
            "agent" => Some(Namespace::Agent),
            _ => None,
        };
        let mut fields = Vec::new();
        if namespace.is_none() {
            fields.push(first.clone());
        }
        let mut end = start;
        while *self.peek() == Tok::Dot {
            self.bump();
            let (tok, span) = self.bump();
            match tok {
                Tok::Ident(name) | Tok::Str(name) => fields.push(name),
                other => {
                    let message = format!(
                        "expected a field name after `.`, found {} (quote odd names: .\"tier-2\")",
                        other.describe()
                    );
                    return Err(SyntaxError { span, message });
                }
            }
            end = span;
        }
        if fields.is_empty() {
            let message = format!("`{first}` is a namespace; name a field, e.g. `{first}.id`");
            return Err(SyntaxError {
                span: start,
                message,
            });
        }
        Ok(Expr::new(
            ExprKind::Path(Path { namespace, fields }),
            start.to(end),
        ))
    }
}

fn is_comparison_op(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::Eq
            | Tok::Ne
            | Tok::Lt
            | Tok::Le
            | Tok::Gt
            | Tok::Ge
            | Tok::In
            | Tok::Has
            | Tok::Contains
            | Tok::Is
    )
}
