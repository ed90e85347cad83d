//! Source text to tokens. Keywords are recognised case-insensitively here so the parser only
//! ever sees one spelling; identifiers and string contents keep their exact text.

use super::Span;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    // Keywords.
    And,
    Or,
    Not,
    In,
    Has,
    Contains,
    Is,
    Null,
    True,
    False,
    // Punctuation.
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    /// How the token is named in "expected …, found …" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Num(_) => "a number".into(),
            Tok::Eof => "the end of the rule".into(),
            other => format!("`{}`", other.text()),
        }
    }

    fn text(&self) -> &'static str {
        match self {
            Tok::And => "and",
            Tok::Or => "or",
            Tok::Not => "not",
            Tok::In => "in",
            Tok::Has => "has",
            Tok::Contains => "contains",
            Tok::Is => "is",
            Tok::Null => "null",
            Tok::True => "true",
            Tok::False => "false",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Ident(_) | Tok::Str(_) | Tok::Num(_) | Tok::Eof => "",
        }
    }
}

/// The keyword a word spells, whatever its case.
pub(crate) fn keyword(word: &str) -> Option<Tok> {
    let kw = match word.to_ascii_lowercase().as_str() {
        "and" => Tok::And,
        "or" => Tok::Or,
        "not" => Tok::Not,
        "in" => Tok::In,
        "has" => Tok::Has,
        "contains" => Tok::Contains,
        "is" => Tok::Is,
        "null" => Tok::Null,
        "true" => Tok::True,
        "false" => Tok::False,
        _ => return None,
    };
    Some(kw)
}

/// True when `s` can be written as a bare identifier (not a keyword, no odd characters).
pub(crate) fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && keyword(s).is_none()
}

/// A lexing failure: where and why.
pub(crate) struct LexError {
    pub span: Span,
    pub message: String,
}

pub(crate) fn lex(src: &str) -> Result<Vec<(Tok, Span)>, LexError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let two = bytes.get(i..i + 2);
        let (tok, len) = match c {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' => (Tok::Dot, 1),
            b'=' if two == Some(b"==") => (Tok::Eq, 2),
            b'!' if two == Some(b"!=") => (Tok::Ne, 2),
            b'<' if two == Some(b"<=") => (Tok::Le, 2),
            b'>' if two == Some(b">=") => (Tok::Ge, 2),
            b'<' => (Tok::Lt, 1),
            b'>' => (Tok::Gt, 1),
            b'=' => return Err(err(start, 1, "`=` is not an operator; compare with `==`")),
            b'"' | b'\'' => {
                let (s, len) = string(src, start)?;
                (Tok::Str(s), len)
            }
            b'0'..=b'9' | b'-' => {
                let (n, len) = number(src, start)?;
                (Tok::Num(n), len)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let len = bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                let word = &src[start..start + len];
                (
                    keyword(word).unwrap_or_else(|| Tok::Ident(word.to_owned())),
                    len,
                )
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                let hint = match ch {
                    '&' | '|' => "; write `and` / `or`",
                    '!' => "; write `not` or `!=`",
                    _ => "",
                };
                return Err(err(
                    start,
                    ch.len_utf8(),
                    &format!("unexpected character `{ch}`{hint}"),
                ));
            }
        };
        out.push((tok, Span::new(start, start + len)));
        i = start + len;
    }
    out.push((Tok::Eof, Span::new(src.len(), src.len())));
    Ok(out)
}

fn err(start: usize, len: usize, message: &str) -> LexError {
    LexError {
        span: Span::new(start, start + len),
        message: message.to_owned(),
    }
}

/// A quoted string starting at `start`; returns its value and its length in bytes, quotes included.
fn string(src: &str, start: usize) -> Result<(String, usize), LexError> {
    let rest = &src[start..];
    let mut chars = rest.char_indices();
    let quote = chars.next().map(|(_, c)| c).unwrap_or('"');
    let mut out = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, at + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                out.push(match e {
                    '\\' => '\\',
                    '"' => '"',
                    '\'' => '\'',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => {
                        let msg =
                            format!("unknown escape `\\{other}`; use \\\\ \\\" \\' \\n \\t or \\r");
                        return Err(err(start + at, 1 + other.len_utf8(), &msg));
                    }
                });
            }
            c => out.push(c),
        }
    }
    Err(err(start, 1, "this string is never closed"))
}

/// An integer or decimal number, optionally negative: `3`, `-1`, `2.5`.
fn number(src: &str, start: usize) -> Result<(f64, usize), LexError> {
    let bytes = &src.as_bytes()[start..];
    let mut len = usize::from(bytes[0] == b'-');
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let int = digits(len);
    if int == 0 {
        return Err(err(start, 1, "`-` must be followed by a number"));
    }
    len += int;
    if bytes.get(len) == Some(&b'.') {
        let frac = digits(len + 1);
        if frac == 0 {
            return Err(err(
                start,
                len + 1,
                "a decimal point must be followed by digits",
            ));
        }
        len += 1 + frac;
    }
    if bytes
        .get(len)
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return Err(err(
            start + len,
            1,
            "a number must be followed by a space or an operator",
        ));
    }
    let value = src[start..start + len]
        .parse::<f64>()
        .map_err(|_| err(start, len, "not a valid number"))?;
    Ok((value, len))
}
