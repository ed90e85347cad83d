//! What rules may read: the declared schema they are checked against, and the views the
//! engine fills for evaluation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The channels `conv.channel` can hold; a literal outside this list is a check-time error.
pub const CHANNELS: &[&str] = &["whatsapp", "sms", "webchat"];

/// The static type of an expression or attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    Bool,
    Number,
    String,
    List(Box<Type>),
}

impl Type {
    pub fn list(of: Type) -> Type {
        Type::List(Box::new(of))
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Bool => f.write_str("Bool"),
            Type::Number => f.write_str("Number"),
            Type::String => f.write_str("String"),
            Type::List(of) => write!(f, "List<{of}>"),
        }
    }
}

/// The declared schema. Conversation and agent fields are fixed by the language; the contact
/// attributes are the tenant's own.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// `conv.contact.<name>` and its type.
    pub contact: BTreeMap<String, Type>,
    /// The account's skill catalogue: `skill("x")` must name one. `None`: not checked.
    pub skills: Option<BTreeSet<String>>,
    /// The account's team names: `team == "x"` and `agent.teams has "x"` must name one.
    /// `None`: not checked.
    pub teams: Option<BTreeSet<String>>,
}

impl Schema {
    /// Declares a contact attribute (builder style).
    pub fn contact(mut self, name: &str, ty: Type) -> Self {
        self.contact.insert(name.to_owned(), ty);
        self
    }

    /// Checks skill and team names against the account's (builder style).
    pub fn catalogues(mut self, skills: BTreeSet<String>, teams: BTreeSet<String>) -> Self {
        self.skills = Some(skills);
        self.teams = Some(teams);
        self
    }
}

/// A runtime attribute value (contact attributes). A value whose type disagrees with the
/// schema evaluates as null rather than failing.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
}

/// The conversation as a rule sees it.
#[derive(Debug, Clone, Default)]
pub struct ConvView {
    /// One of [`CHANNELS`].
    pub channel: String,
    /// The inbox slug.
    pub inbox: String,
    pub language: Option<String>,
    pub labels: Vec<String>,
    pub priority: i64,
    /// The first customer message's text, if there is one yet.
    pub first_message: Option<String>,
    /// Contact attributes; absent keys are null.
    pub contact: BTreeMap<String, Value>,
}

/// An agent as a target expression sees it.
#[derive(Debug, Clone, Default)]
pub struct AgentView {
    pub id: String,
    pub teams: Vec<String>,
    pub branch: Option<String>,
    /// Skill name → level 0–5.
    pub skills: BTreeMap<String, u8>,
    /// Language code → level 0–5.
    pub languages: BTreeMap<String, u8>,
}
