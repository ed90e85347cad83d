//! Property tests of the rule language: well-typed trees survive print → parse unchanged,
//! evaluation never panics and binding agrees with full evaluation, and no input panics the
//! parser or checker.

use std::collections::BTreeMap;

use proptest::prelude::*;
use switchboard_routing::expr::{
    AgentView, CmpOp, ConvView, Expr, ExprKind, Literal, MatchExpr, Namespace, Path, Schema, Span,
    TargetExpr, Type, Value, parse,
};

fn schema() -> Schema {
    Schema::default()
        .contact("vip", Type::Bool)
        .contact("tier", Type::String)
        .contact("score", Type::Number)
        .contact("tags", Type::list(Type::String))
        .contact("tier-2", Type::String)
}

fn node(kind: ExprKind) -> Expr {
    Expr::new(kind, Span::default())
}

fn path(namespace: Option<Namespace>, fields: &[&str]) -> Expr {
    let fields = fields.iter().map(|f| (*f).to_owned()).collect();
    node(ExprKind::Path(Path { namespace, fields }))
}

fn call(name: &str, arg: String) -> Expr {
    node(ExprKind::Call {
        name: name.into(),
        args: vec![lit(Literal::String(arg))],
    })
}

fn lit(l: Literal) -> Expr {
    node(ExprKind::Literal(l))
}

fn cmp(op: CmpOp, lhs: Expr, rhs: Expr) -> Expr {
    node(ExprKind::Compare {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
    })
}

const CONV: Option<Namespace> = Some(Namespace::Conv);
const AGENT: Option<Namespace> = Some(Namespace::Agent);

/// Names that the generated views also use, so lookups sometimes hit, plus anything at all.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["billing", "refunds", "es", "en", "payments"])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-2i32..8).prop_map(f64::from),
        (-100.0f64..100.0),
        any::<f64>().prop_filter("finite", |n| n.is_finite()),
    ]
}

fn num_lit() -> impl Strategy<Value = Expr> {
    number().prop_map(|n| lit(Literal::Number(n)))
}

fn str_lit() -> impl Strategy<Value = Expr> {
    name().prop_map(|s| lit(Literal::String(s)))
}

fn num_operand() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(path(CONV, &["priority"])),
        Just(path(CONV, &["contact", "score"])),
        name().prop_map(|n| call("skill", n)),
        name().prop_map(|n| call("lang", n)),
        num_lit(),
    ]
}

fn str_operand() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(path(CONV, &["inbox"])),
        Just(path(CONV, &["language"])),
        Just(path(CONV, &["first_message"])),
        Just(path(CONV, &["contact", "tier"])),
        Just(path(CONV, &["contact", "tier-2"])),
        Just(path(None, &["id"])),
        Just(path(AGENT, &["branch"])),
        str_lit(),
    ]
}

fn list_operand() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(path(CONV, &["labels"])),
        Just(path(AGENT, &["teams"])),
        Just(path(None, &["teams"])),
        Just(path(CONV, &["contact", "tags"])),
    ]
}

fn bool_operand() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(path(CONV, &["contact", "vip"])),
        "[a-z]{1,4}( [a-z]{1,4})?".prop_map(|w| call("keyword", w)),
        any::<bool>().prop_map(|b| lit(Literal::Bool(b))),
    ]
}

fn list_of(item: impl Strategy<Value = Expr>) -> impl Strategy<Value = Expr> {
    prop::collection::vec(item, 0..4).prop_map(|items| node(ExprKind::List(items)))
}

fn order_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ])
}

fn eq_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne])
}

fn in_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![CmpOp::In, CmpOp::NotIn])
}

fn any_operand() -> impl Strategy<Value = Expr> {
    prop_oneof![num_operand(), str_operand(), list_operand(), bool_operand()]
}

/// Well-typed leaf conditions of a target expression.
fn leaf() -> impl Strategy<Value = Expr> {
    let channel = prop::sample::select(vec!["whatsapp", "sms", "webchat"])
        .prop_map(|c| lit(Literal::String(c.into())));
    prop_oneof![
        (num_operand(), order_op(), num_operand()).prop_map(|(a, op, b)| cmp(op, a, b)),
        (str_operand(), eq_op(), str_operand()).prop_map(|(a, op, b)| cmp(op, a, b)),
        (str_operand(), str_operand()).prop_map(|(a, b)| cmp(CmpOp::Contains, a, b)),
        (str_operand(), in_op(), list_of(str_lit())).prop_map(|(a, op, b)| cmp(op, a, b)),
        (str_operand(), in_op(), list_operand()).prop_map(|(a, op, b)| cmp(op, a, b)),
        (num_operand(), in_op(), list_of(num_lit())).prop_map(|(a, op, b)| cmp(op, a, b)),
        (list_operand(), str_operand()).prop_map(|(a, b)| cmp(CmpOp::Has, a, b)),
        (eq_op(), channel).prop_map(|(op, c)| cmp(op, path(CONV, &["channel"]), c)),
        (eq_op(), str_lit()).prop_map(|(op, t)| cmp(op, path(None, &["team"]), t)),
        (in_op(), list_of(str_lit())).prop_map(|(op, l)| cmp(op, path(AGENT, &["team"]), l)),
        bool_operand(),
        (bool_operand(), eq_op(), bool_operand()).prop_map(|(a, op, b)| cmp(op, a, b)),
        (any_operand(), any::<bool>()).prop_map(|(operand, negated)| node(ExprKind::IsNull {
            operand: Box::new(operand),
            negated
        })),
    ]
}

/// Well-typed target conditions.
fn condition() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| node(ExprKind::Not(Box::new(e)))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| node(ExprKind::And(v))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| node(ExprKind::Or(v))),
            (inner.clone(), eq_op(), inner).prop_map(|(a, op, b)| cmp(op, a, b)),
        ]
    })
}

fn value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(Value::Number),
        name().prop_map(Value::String),
    ];
    prop_oneof![
        3 => scalar.clone(),
        1 => prop::collection::vec(scalar, 0..3).prop_map(Value::List),
    ]
}

fn opt_name() -> impl Strategy<Value = Option<String>> {
    prop::option::of(name())
}

fn conv_view() -> impl Strategy<Value = ConvView> {
    let keys = prop::sample::select(vec!["vip", "tier", "score", "tags", "tier-2", "other"]);
    (
        prop::sample::select(vec!["whatsapp", "sms", "webchat", ""]),
        name(),
        opt_name(),
        prop::collection::vec(name(), 0..3),
        any::<i64>(),
        prop::option::of("[a-zA-Z ,.]{0,30}"),
        prop::collection::btree_map(keys.prop_map(str::to_owned), value(), 0..6),
    )
        .prop_map(
            |(channel, inbox, language, labels, priority, first_message, contact)| ConvView {
                channel: channel.into(),
                inbox,
                language,
                labels,
                priority,
                first_message,
                contact,
            },
        )
}

fn agent_view() -> impl Strategy<Value = AgentView> {
    let levels = || prop::collection::btree_map(name(), any::<u8>(), 0..4);
    (
        name(),
        prop::collection::vec(name(), 0..3),
        opt_name(),
        levels(),
        levels(),
    )
        .prop_map(
            |(id, teams, branch, skills, languages): (_, _, _, BTreeMap<_, _>, BTreeMap<_, _>)| {
                AgentView {
                    id,
                    teams,
                    branch,
                    skills,
                    languages,
                }
            },
        )
}

/// Fragments that make random text look enough like rules to reach deep into the parser.
fn token_soup() -> impl Strategy<Value = String> {
    let frag = prop::sample::select(vec![
        "conv",
        "agent",
        ".",
        "contact",
        "\"tier-2\"",
        "'x'",
        "\"",
        "'",
        "\\",
        "(",
        ")",
        "[",
        "]",
        ",",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "=",
        "!",
        "and",
        "OR",
        "not",
        "in",
        "has",
        "contains",
        "is",
        "null",
        "true",
        "FALSE",
        "skill",
        "lang",
        "keyword",
        "team",
        "1",
        "-",
        "2.5",
        "-0",
        "1.",
        "é",
        " ",
        "\n",
        "channel",
        "labels",
        "priority",
    ]);
    prop::collection::vec(frag, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn well_typed_trees_round_trip_through_display(expr in condition()) {
        let text = expr.to_string();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&parsed, &expr, "{}", text);
        let compiled = TargetExpr::compile(&text, &schema())
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(compiled.to_string(), text);
    }

    #[test]
    fn evaluation_never_panics_and_binding_agrees(
        expr in condition(),
        conv in conv_view(),
        agents in prop::collection::vec(agent_view(), 1..4),
    ) {
        let compiled = TargetExpr::compile(&expr.to_string(), &schema())
            .map_err(|e| TestCaseError::fail(format!("{expr}: {e}")))?;
        let bound = compiled.bind(&conv);
        for agent in &agents {
            let full = compiled.matches(&conv, agent);
            prop_assert_eq!(bound.matches(agent), full, "{}", expr);
            if let Some(decided) = bound.constant() {
                prop_assert_eq!(decided, full);
            }
            // Requirements are necessary conditions: a matching agent meets every one.
            if full {
                let req = compiled.requirements();
                for (skill, min) in &req.skills {
                    prop_assert!(agent.skills.get(skill).is_some_and(|l| l >= min), "{}", expr);
                }
                for (code, min) in &req.languages {
                    prop_assert!(agent.languages.get(code).is_some_and(|l| l >= min), "{}", expr);
                }
                for team in &req.teams {
                    prop_assert!(agent.teams.contains(team), "{}", expr);
                }
                for branch in &req.branches {
                    prop_assert_eq!(agent.branch.as_ref(), Some(branch), "{}", expr);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse(&text);
        let _ = MatchExpr::compile(&text, &schema());
        let _ = TargetExpr::compile(&text, &schema());
    }

    #[test]
    fn rule_shaped_noise_never_panics(text in token_soup(), conv in conv_view(), agent in agent_view()) {
        if let Ok(m) = MatchExpr::compile(&text, &schema()) {
            let _ = m.matches(&conv);
            let reparsed = parse(&m.to_string()).ok();
            prop_assert_eq!(reparsed.as_ref(), Some(m.ast()));
        }
        if let Ok(t) = TargetExpr::compile(&text, &schema()) {
            prop_assert_eq!(t.bind(&conv).matches(&agent), t.matches(&conv, &agent));
        }
        // Diagnostics always point inside the text.
        if let Err(e) = TargetExpr::compile(&text, &schema()) {
            prop_assert!(!e.0.is_empty());
            for d in &e.0 {
                prop_assert!(d.span.start <= text.len() && d.line >= 1 && d.column >= 1);
            }
        }
    }
}
