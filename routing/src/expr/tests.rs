//! Language-level tests: the issue's example, every operator, null semantics, diagnostics and
//! their positions, namespaces, the channel enum, requirements, binding.

use std::collections::BTreeMap;

use super::*;

fn schema() -> Schema {
    Schema::default()
        .contact("vip", Type::Bool)
        .contact("tier", Type::String)
        .contact("score", Type::Number)
        .contact("tags", Type::list(Type::String))
        .contact("tier-2", Type::String)
}

fn conv() -> ConvView {
    ConvView {
        channel: "whatsapp".into(),
        inbox: "support-es".into(),
        language: Some("es".into()),
        labels: vec!["billing".into(), "urgent".into()],
        priority: 2,
        first_message: Some("Hola, quiero un Refund, por favor".into()),
        contact: BTreeMap::from([
            ("vip".into(), Value::Bool(true)),
            ("tier".into(), Value::String("gold".into())),
            ("score".into(), Value::Number(7.5)),
            (
                "tags".into(),
                Value::List(vec![Value::String("b2b".into())]),
            ),
        ]),
    }
}

fn agent() -> AgentView {
    AgentView {
        id: "agt_1".into(),
        teams: vec!["payments".into(), "tier1".into()],
        branch: Some("madrid".into()),
        skills: BTreeMap::from([("billing".into(), 4), ("refunds".into(), 0)]),
        languages: BTreeMap::from([("es".into(), 5), ("en".into(), 2)]),
    }
}

fn target(src: &str) -> TargetExpr {
    TargetExpr::compile(src, &schema()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn eval_t(src: &str) -> bool {
    target(src).matches(&conv(), &agent())
}

fn eval_m(src: &str) -> bool {
    MatchExpr::compile(src, &schema())
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .matches(&conv())
}

fn target_errors(src: &str) -> Vec<Diagnostic> {
    TargetExpr::compile(src, &schema()).expect_err(src).0
}

fn match_errors(src: &str) -> Vec<Diagnostic> {
    MatchExpr::compile(src, &schema()).expect_err(src).0
}

/// (line, column, message) of the only diagnostic.
fn single(diags: Vec<Diagnostic>) -> (usize, usize, String) {
    assert_eq!(diags.len(), 1, "{diags:?}");
    let d = &diags[0];
    (d.line, d.column, d.message.clone())
}

#[test]
fn the_issue_example_parses_checks_and_evaluates() {
    let src = r#"skill("billing") >= 3 and lang("es") >= 2 and team == "payments""#;
    let t = target(src);
    assert!(t.matches(&conv(), &agent()));
    assert_eq!(t.to_string(), src);
    let mut weak = agent();
    weak.skills.insert("billing".into(), 2);
    assert!(!t.matches(&conv(), &weak));
    let mut elsewhere = agent();
    elsewhere.teams = vec!["sales".into()];
    assert!(!t.matches(&conv(), &elsewhere));
}

#[test]
fn comparison_operators() {
    for (src, want) in [
        ("conv.priority == 2", true),
        ("conv.priority != 2", false),
        ("conv.priority < 3", true),
        ("conv.priority <= 2", true),
        ("conv.priority > 2", false),
        ("conv.priority >= 2.0", true),
        ("conv.contact.score > 7.25", true),
        ("conv.priority > -1", true),
        ("id == 'agt_1'", true),
        ("agent.branch != \"lisbon\"", true),
        ("conv.contact.vip == true", true),
        ("conv.contact.vip", true),
        ("not conv.contact.vip", false),
        ("true", true),
        ("false or true and false", false),
        ("(false or true) and true", true),
    ] {
        assert_eq!(eval_t(src), want, "{src}");
    }
}

#[test]
fn list_and_text_operators() {
    for (src, want) in [
        ("conv.language in [\"es\", \"pt\"]", true),
        ("conv.language not in ['es']", false),
        ("conv.priority in [1, 2, 3]", true),
        ("conv.labels has \"urgent\"", true),
        ("conv.labels has \"sales\"", false),
        ("\"billing\" in conv.labels", true),
        ("\"b2b\" not in conv.contact.tags", false),
        ("conv.contact.tags has 'b2b'", true),
        ("teams has 'tier1'", true),
        ("agent.id in conv.labels", false),
        ("conv.first_message contains \"REFUND\"", true),
        ("conv.first_message contains \"quiero un\"", true),
        ("conv.inbox contains 'sales'", false),
        ("keyword(\"refund\")", true),
        ("keyword(\"REFUND, por\")", true),
        ("keyword(\"ref\")", false),
        ("keyword(\"hola\") and not keyword(\"adios\")", true),
        ("team == 'tier1'", true),
        ("'payments' == team", true),
        ("team != 'payments'", false),
        ("team in ['sales', 'tier1']", true),
        ("team not in ['sales', 'tier1']", false),
        ("conv.channel == 'whatsapp'", true),
        ("conv.channel in ['sms', 'webchat']", false),
    ] {
        assert_eq!(eval_t(src), want, "{src}");
    }
}

#[test]
fn keywords_are_case_insensitive_and_printed_lowercase() {
    // Function names are not keywords: only `skill` exists.
    assert!(TargetExpr::compile("SKILL(\"x\") >= 1", &schema()).is_err());
    let t = target("skill(\"x\") IS NOT NULL Or NOT conv.labels HAS 'a' AND True");
    assert_eq!(
        t.to_string(),
        "skill(\"x\") is not null or not conv.labels has \"a\" and true"
    );
}

#[test]
fn null_semantics() {
    let mut c = conv();
    c.contact.clear();
    c.language = None;
    c.first_message = None;
    let a = AgentView::default();
    let check = |src: &str| target(src).matches(&c, &a);
    // Every comparison with null is false…
    for src in [
        "conv.contact.score == 1",
        "conv.contact.score != 1",
        "conv.contact.score < 1",
        "conv.contact.score >= 1",
        "conv.language in ['es']",
        "conv.language not in ['es']",
        "conv.contact.tags has 'x'",
        "conv.contact.tier contains ''",
        "skill('billing') >= 0",
        "skill('billing') != 3",
        "lang('es') < 5",
        "branch == 'madrid'",
        "branch != 'madrid'",
        "conv.contact.vip",
        "conv.contact.vip == false",
        "keyword('refund')",
        "conv.language is not null",
    ] {
        assert!(!check(src), "{src} should be false");
    }
    // …so their negations are true, and `is null` sees the null.
    for src in [
        "not (conv.contact.score == 1)",
        "not (conv.contact.score != 1)",
        "not conv.contact.vip",
        "not keyword('refund')",
        "conv.contact.score is null",
        "skill('billing') is null",
        "branch is null",
        "team != 'payments'",
    ] {
        assert!(check(src), "{src} should be true");
    }
}

#[test]
fn runtime_values_of_the_wrong_type_read_as_null() {
    let mut c = conv();
    c.contact
        .insert("score".into(), Value::String("high".into()));
    c.contact.insert("vip".into(), Value::Number(1.0));
    c.contact.insert("tags".into(), Value::Bool(true));
    let t = |src: &str| target(src).matches(&c, &agent());
    assert!(!t("conv.contact.score > 1"));
    assert!(!t("conv.contact.vip"));
    assert!(!t("conv.contact.tags has 'x'"));
    assert!(t("not (conv.contact.score > 1)"));
}

#[test]
fn match_expressions_read_the_conversation_with_bare_names() {
    assert!(eval_m(
        "channel == 'whatsapp' and contact.vip and priority >= 2"
    ));
    assert!(eval_m(
        "conv.contact.\"tier-2\" is null and contact.tier == 'gold'"
    ));
    assert!(eval_m("keyword('refund') or labels has 'x'"));
    assert!(!eval_m("language != 'es'"));
}

#[test]
fn match_expressions_may_not_read_agents() {
    let (line, col, msg) = single(match_errors("channel == 'sms' and agent.id == 'x'"));
    assert_eq!((line, col), (1, 22));
    assert!(
        msg.contains("match expression reads only the conversation"),
        "{msg}"
    );
    let (_, col, msg) = single(match_errors("skill('billing') > 1"));
    assert_eq!(col, 1);
    assert!(msg.contains("reads the agent"), "{msg}");
    // A bare name is a conversation field in a match expression.
    let (_, _, msg) = single(match_errors("team == 'payments'"));
    assert!(
        msg.starts_with("unknown conversation field `team`"),
        "{msg}"
    );
}

#[test]
fn target_bare_names_are_agent_fields() {
    let (_, col, msg) = single(target_errors("skill('a') > 1 and channel == 'sms'"));
    assert_eq!(col, 20);
    assert!(msg.starts_with("unknown agent field `channel`"), "{msg}");
    assert!(msg.contains("`conv.` prefix"), "{msg}");
    assert!(eval_t("conv.channel == 'whatsapp' and id == 'agt_1'"));
}

#[test]
fn channel_literals_are_checked_against_the_enum() {
    let (line, col, msg) = single(match_errors("channel == 'fax'"));
    assert_eq!((line, col), (1, 12));
    assert_eq!(
        msg,
        "unknown channel \"fax\"; expected one of whatsapp, sms, webchat"
    );
    let diags = match_errors("'telex' != conv.channel or channel in ['sms', 'WhatsApp', 'pigeon']");
    let cols: Vec<_> = diags.iter().map(|d| d.column).collect();
    assert_eq!(cols, vec![1, 47, 59]);
    // Substrings are not values of the enum.
    assert!(eval_m("channel contains 'whats'"));
}

#[test]
fn type_errors_are_reported_together_with_positions() {
    let src = "conv.priority == \"high\"\n  and skill(\"x\") >= \"3\"\n  and nope(1)";
    let diags = target_errors(src);
    let got: Vec<_> = diags
        .iter()
        .map(|d| (d.line, d.column, d.span.start))
        .collect();
    assert_eq!(got, vec![(1, 1, 0), (2, 7, 30), (3, 7, 54)]);
    assert_eq!(
        diags[0].message,
        "cannot compare `conv.priority` (a Number) with `\"high\"` (a String)"
    );
    assert_eq!(
        diags[1].message,
        "cannot compare `skill(\"x\")` (a Number) with `\"3\"` (a String)"
    );
    assert_eq!(
        diags[2].message,
        "unknown function `nope`; known: skill, lang, keyword"
    );
    let shown = RuleError(diags).to_string();
    assert!(shown.starts_with("1:1: cannot compare"), "{shown}");
}

#[test]
fn more_check_errors() {
    for (src, col, needle) in [
        ("skill('a', 'b') > 1", 1, "takes 1 argument, got 2"),
        ("skill(id) > 1", 7, "takes a quoted name"),
        ("keyword(' ')", 9, "needs a word"),
        ("conv.nope == 1", 1, "unknown conversation field `nope`"),
        (
            "conv.contact.age > 1",
            1,
            "unknown contact attribute `age`; declared:",
        ),
        ("conv.contact == 1", 1, "group of contact attributes"),
        (
            "conv.channel.x == 'a'",
            1,
            "`conv.channel` has no field `x`",
        ),
        ("skills has 'a'", 1, "with `skill(\"…\")`"),
        (
            "conv.priority",
            1,
            "expected a condition (Bool), but `conv.priority` is a Number",
        ),
        ("lang('es') and true", 1, "is a Number"),
        ("conv.labels == ['a']", 16, "a list can only follow"),
        ("conv.labels == conv.labels", 1, "for lists use `has`"),
        ("id < 'b'", 1, "orders Numbers, not String"),
        (
            "conv.labels has 1",
            1,
            "holds String values but `1` is a Number",
        ),
        ("id has 'a'", 1, "needs a list on its left"),
        ("id in conv.priority", 1, "needs a list on its right"),
        (
            "conv.priority in ['1']",
            19,
            "`conv.priority` is a Number, but `\"1\"` is a String",
        ),
        (
            "conv.labels in ['a']",
            1,
            "is a list; test its members with `has`",
        ),
        ("conv.priority contains 'a'", 1, "looks for text in text"),
        ("team has 'a'", 1, "tests membership in `agent.teams`"),
        ("team == id", 1, "tests membership"),
        ("team", 1, "tests membership"),
        ("team is null", 1, "tests membership"),
        ("(conv.priority > 1) == 'yes'", 1, "cannot compare"),
    ] {
        let (line, c, msg) = single(target_errors(src));
        assert_eq!((line, c), (1, col), "{src}: {msg}");
        assert!(msg.contains(needle), "{src}: {msg}");
    }
}

#[test]
fn syntax_errors_have_exact_positions() {
    for (src, line, col, needle) in [
        ("skill('a') >", 1, 13, "ends too early"),
        ("a == 1 ==", 1, 8, "cannot be chained"),
        ("(a == 1", 1, 8, "expected `)`"),
        ("a == 1)", 1, 7, "no matching `(`"),
        ("a = 1", 1, 3, "compare with `==`"),
        ("a == 1 && b", 1, 8, "write `and` / `or`"),
        ("a == 'open", 1, 6, "never closed"),
        ("a == 'x\\q'", 1, 8, "unknown escape"),
        ("x ==\n  1.", 2, 3, "decimal point"),
        ("a == null", 1, 6, "test with `is null`"),
        ("a is nul", 1, 6, "expected `null`"),
        ("conv == 1", 1, 1, "is a namespace"),
        ("conv.contact.(x) == 1", 1, 14, "quote odd names"),
        ("[a] == 1", 1, 2, "a list holds only"),
        ("a not b", 1, 3, "followed by `in`"),
        ("é == 1", 1, 1, "unexpected character `é`"),
        ("'é' ==\n\t é", 2, 3, "unexpected character `é`"),
        ("a == 1 b", 1, 8, "expected `and`, `or`"),
        ("3x == 1", 1, 2, "followed by a space"),
    ] {
        let diags = parse(src).expect_err(src).0;
        let (l, c, msg) = single(diags);
        assert_eq!((l, c), (line, col), "{src}: {msg}");
        assert!(msg.contains(needle), "{src}: {msg}");
    }
}

#[test]
fn nesting_is_capped() {
    let deep = format!(
        "{}true{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    let msg = &parse(&deep).expect_err("too deep").0[0].message;
    assert!(msg.contains("nests deeper"), "{msg}");
    let ok = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&ok).is_ok());
    let nots = format!("{}true", "not ".repeat(100_000));
    assert!(parse(&nots).is_err());
    let long = vec!["true"; 100_000].join(" and ");
    assert!(MatchExpr::compile(&long, &schema()).is_ok());
}

#[test]
fn quoted_segments_and_escapes_print_canonically() {
    let t = target(r#"conv.contact."tier-2" == 'it\'s "x"\n' or conv.contact."tier-2" is null"#);
    assert_eq!(
        t.to_string(),
        r#"conv.contact."tier-2" == "it's \"x\"\n" or conv.contact."tier-2" is null"#
    );
}

#[test]
fn display_keeps_the_tree_shape() {
    for src in [
        "not (true or false) and (false or true)",
        "true and (true and false)",
        "(true or false) or true",
        "not not true",
        "(conv.priority > 1) == (conv.priority < 5)",
        "(skill(\"a\") is null) == false",
        "conv.priority in [1, 2.5, -3]",
    ] {
        let t = target(src).to_string();
        assert_eq!(t, src);
        assert_eq!(parse(src).unwrap(), parse(&t).unwrap());
    }
}

#[test]
fn requirements_come_from_top_level_conjuncts() {
    let t = target(
        "skill('billing') >= 3 and lang('es') > 1.5 and team == 'payments' and branch == 'madrid' \
         and 2 <= skill('refunds') and skill('billing') > 3 and agent.teams has 'vip' \
         and lang('en') is not null and skill('x') in [4, 2] and (skill('y') >= 5 or true) \
         and not (lang('fr') >= 1) and conv.priority > 1",
    );
    let r = t.requirements();
    assert_eq!(
        r.skills,
        BTreeMap::from([
            ("billing".into(), 4),
            ("refunds".into(), 2),
            ("x".into(), 2)
        ])
    );
    assert_eq!(
        r.languages,
        BTreeMap::from([("es".into(), 2), ("en".into(), 0)])
    );
    assert_eq!(r.teams.iter().collect::<Vec<_>>(), ["payments", "vip"]);
    assert_eq!(r.branches.iter().collect::<Vec<_>>(), ["madrid"]);

    // Under `or` nothing is required; a lone comparison is its own conjunct.
    assert!(
        target("skill('a') > 1 or team == 'x'")
            .requirements()
            .is_empty()
    );
    assert_eq!(target("skill('a') < 3").requirements().skills["a"], 0);
    assert!(target("team in ['a', 'b']").requirements().is_empty());
}

#[test]
fn bind_folds_the_conversation_and_agrees_with_full_evaluation() {
    let srcs = [
        "keyword('refund') and skill('billing') >= 3",
        "conv.channel == 'sms' and team == 'payments'",
        "conv.language == 'es' or lang('en') >= 4",
        "(conv.contact.vip and skill('refunds') is not null) == true",
        "id in conv.labels or conv.contact.tags has 'b2b'",
        "not (conv.priority > 5) and branch == 'madrid'",
    ];
    let mut agents = vec![agent(), AgentView::default()];
    agents[1].teams = vec!["payments".into()];
    for src in srcs {
        let t = target(src);
        let c = conv();
        let bound = t.bind(&c);
        for a in &agents {
            assert_eq!(bound.matches(a), t.matches(&c, a), "{src}");
        }
    }
    assert_eq!(
        target("conv.channel == 'sms' and team == 'x'")
            .bind(&conv())
            .constant(),
        Some(false)
    );
    assert_eq!(
        target("keyword('refund') or team == 'x'")
            .bind(&conv())
            .constant(),
        Some(true)
    );
    assert_eq!(
        target("keyword('refund') and team == 'x'")
            .bind(&conv())
            .constant(),
        None
    );
}

#[test]
fn text_matching_helpers() {
    use super::eval::{contains_ci, has_word};
    assert!(contains_ci("ÉCOLE", "école"));
    assert!(contains_ci("abc", ""));
    assert!(!contains_ci("", "a"));
    assert!(has_word("I want a refund.", "refund"));
    assert!(has_word("REFUND", "refund"));
    assert!(!has_word("refunds please", "refund"));
    assert!(!has_word("prerefund", "refund"));
    assert!(has_word("pre refund-now", "refund"));
    assert!(has_word("Quiero un reembolso ya", "un reembolso"));
}

#[test]
fn skills_and_teams_are_checked_against_the_catalogues_with_positions() {
    let names = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect();
    let schema = schema().catalogues(names(&["billing"]), names(&["payments"]));
    assert!(
        TargetExpr::compile(
            "skill(\"billing\") >= 3 and team == \"payments\" and agent.teams has \"payments\"",
            &schema
        )
        .is_ok()
    );
    let err = TargetExpr::compile(
        "skill(\"biling\") >= 3 and team in [\"payments\", \"sales\"]\nor agent.teams has \"ops\"",
        &schema,
    )
    .unwrap_err();
    let found: Vec<(usize, usize, &str)> = err
        .0
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (1, 7));
    assert!(
        found[0].2.starts_with("unknown skill `biling`"),
        "{found:?}"
    );
    assert_eq!((found[1].0, found[1].1), (1, 47));
    assert!(found[1].2.starts_with("unknown team `sales`"), "{found:?}");
    assert_eq!((found[2].0, found[2].1), (2, 20));
    assert!(found[2].2.starts_with("unknown team `ops`"), "{found:?}");
    // Without catalogues nothing is checked (a stored rule still compiles after a rename).
    assert!(TargetExpr::compile("skill(\"anything\") >= 1", &Schema::default()).is_ok());
}
