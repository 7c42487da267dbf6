//! Grouped Prometheus queries, the pure part: which queries can share one query, the grouped
//! query itself, and each member's share of its answer. The polling is in [`hub`](super::hub).
//!
//! Many targets are written alike: `sum(rate(http_requests_total{app="X"}[1m]))` with only the
//! value of `app` changing. Such queries share one query per interval,
//! `sum by (app) (rate(http_requests_total{app=~"a|b|c"}[1m]))`, whose series for `app="b"` are
//! exactly the series `b`'s own query returns (with `app` added to their labels).
//!
//! # Groupable shapes
//!
//! `AGG [by (L…) | without (L…)] (INNER)`, parentheses allowed around either part, where
//! - `AGG` is `sum`, `avg`, `min`, `max` or `count` (no parameter);
//! - `INNER` is `rate`, `irate` or `increase` of `SEL[range]`, or `SEL` itself;
//! - `SEL` names its metric (`name{…}` or `{__name__="name", …}`), has at least one equality
//!   matcher with a non-empty value on a label matched by no other equality matcher (the labels
//!   that may vary), any other matchers (`!=`, `=~`, `!~`, `=""`), optionally `offset` (not
//!   negative), no `@` and no `or`;
//! - every matcher value is free of `\`, quotes and control characters (so the value reads the same
//!   in any quoting), and the query reads back the same when this module writes it out.
//!
//! Anything else, or anything `promql-parser` cannot read, runs alone as before.
//!
//! When a shape has several such labels (`{app="X", namespace="prod"}`), members that differ in
//! one label only share a query, the others being equal; [`plan`] varies the label that leaves the
//! fewest queries. A query of one value runs as it was written.
//!
//! # Why the grouped query gives each member its own answer
//!
//! Let `S(v)` be the series `SEL` selects with `L="v"`; every one of them carries `L="v"`. The
//! grouped selector `L=~"v1|…|vn"` (each value regex-escaped; Prometheus anchors the regex) selects
//! exactly the union of the `S(vi)`, which are disjoint. `rate`, `irate` and `increase` work series
//! by series and keep every label but the metric name; a named metric means two series never
//! collide once the name is dropped, so one value's series cannot make another's query fail.
//! The aggregation then works group by group, on groups keyed by labels:
//! - plain `AGG` becomes `AGG by (L)`: the one group of `S(v)` is the group `L="v"`;
//! - `AGG by (A…)` becomes `AGG by (A…, L)` (unchanged when `L` is in `A`): all of `S(v)` share
//!   `L="v"`, so adding `L` splits no group of `v`'s own query, and no group mixes two values;
//! - `AGG without (W…)` becomes `AGG without (W… minus L)`: the same argument, the other way round.
//!
//! Each group sees its series in the same relative order as in the query of one value (both are a
//! filtered subsequence of the same ordered selection), so even the floating-point sums agree. The
//! answer's series with `L="v"` are therefore, label `L` aside, exactly `v`'s own answer: empty when
//! `v` has no series, NaN where its own would be NaN, several series where its own has several. Each
//! member then applies KEDA's result rules ([`interpret_series`]) with its own `ignoreNullValues`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier, Offset, VectorSelector};
use serde_json::Value;

use super::prometheus::{QueryError, interpret_series};

/// The longest grouped query written, in bytes: members beyond it go to another query. A long
/// query goes as a `POST` form, so 32 KiB (about 1,400 twenty-character app names) is one request
/// per interval for a thousand seed-style apps.
pub const QUERY_BUDGET: usize = 32 * 1024;

const AGGREGATIONS: [&str; 5] = ["sum", "avg", "min", "max", "count"];
const FUNCTIONS: [&str; 3] = ["rate", "irate", "increase"];

/// What a groupable query looks like with the values of its equality matchers left out. Queries
/// of equal shapes differ only in those values (matcher order and spacing aside).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    aggregation: &'static str,
    grouping: Grouping,
    /// The range function and its range; `None`: the selector is aggregated as it is.
    function: Option<(&'static str, Duration)>,
    offset: Option<Duration>,
    metric: String,
    /// The matchers that never vary, sorted.
    fixed: Vec<Fixed>,
    /// The labels of the equality matchers that may vary, sorted.
    labels: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Grouping {
    All,
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Fixed {
    name: String,
    op: &'static str,
    value: String,
}

/// A groupable query: its shape, and its values of the shape's labels (in the shape's order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recognised {
    /// What it shares with the queries it can be grouped with.
    pub shape: Shape,
    /// The value of each label that may vary.
    pub values: Vec<String>,
}

/// The longest query worth reading for a shape; longer ones run alone.
const MAX_QUERY_BYTES: usize = 2048;

/// The deepest nesting of brackets worth reading for a shape (a groupable query needs 5).
const MAX_DEPTH: usize = 16;

/// The shape of `query` and its values, if it is one of the groupable shapes (see the module).
pub fn recognise(query: &str) -> Option<Recognised> {
    let found = read(&parse(query)?)?;
    // This module writes the grouped query: the query it writes for these values must read back
    // as the very same query, or the shape is not understood well enough to group it.
    let again = read(&parse(&found.shape.render(&found.values, None))?)?;
    (again == found).then_some(found)
}

/// `query` read by `promql-parser`, if it is short and flat enough. The query is tenant input: the
/// parser recurses (a few thousand nested `sum(` overflow a 2 MiB stack), and a panic in it must
/// not take the caller down.
fn parse(query: &str) -> Option<Expr> {
    if query.len() > MAX_QUERY_BYTES {
        return None;
    }
    let mut depth = 0usize;
    for c in query.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return None;
        }
    }
    std::panic::catch_unwind(|| parser::parse(query)).ok()?.ok()
}

fn unparen(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(inner) = expr {
        expr = &inner.expr;
    }
    expr
}

fn read(expr: &Expr) -> Option<Recognised> {
    let Expr::Aggregate(aggregate) = unparen(expr) else { return None };
    if aggregate.param.is_some() {
        return None;
    }
    let op = aggregate.op.to_string();
    let aggregation = *AGGREGATIONS.iter().find(|a| **a == op)?;
    let grouping = match &aggregate.modifier {
        None => Grouping::All,
        Some(LabelModifier::Include(l)) if l.labels.is_empty() => Grouping::All,
        Some(LabelModifier::Include(l)) => Grouping::By(label_set(&l.labels)?),
        Some(LabelModifier::Exclude(l)) => Grouping::Without(label_set(&l.labels)?),
    };
    let (function, selector) = match unparen(&aggregate.expr) {
        Expr::VectorSelector(selector) => (None, selector),
        Expr::Call(call) => {
            let function = *FUNCTIONS.iter().find(|f| **f == call.func.name)?;
            let [arg] = call.args.args.as_slice() else { return None };
            let Expr::MatrixSelector(matrix) = arg.as_ref() else { return None };
            (Some((function, whole_millis(matrix.range)?)), &matrix.vs)
        }
        _ => return None,
    };
    let (metric, fixed, equal) = read_selector(selector)?;
    let offset = match &selector.offset {
        None => None,
        Some(Offset::Pos(d)) => Some(whole_millis(*d)?),
        Some(Offset::Neg(_)) => return None,
    };
    let (labels, values) = equal.into_iter().unzip();
    Some(Recognised { shape: Shape { aggregation, grouping, function, offset, metric, fixed, labels }, values })
}

/// The selector's metric name, its fixed matchers (sorted) and its varying ones (by label).
fn read_selector(selector: &VectorSelector) -> Option<(String, Vec<Fixed>, BTreeMap<String, String>)> {
    if selector.at.is_some() || !selector.matchers.or_matchers.is_empty() {
        return None;
    }
    let mut metric = selector.name.clone();
    let mut fixed = Vec::new();
    let mut equal = BTreeMap::new();
    for m in &selector.matchers.matchers {
        if !is_label_name(&m.name) || !plain_value(&m.value) {
            return None;
        }
        match (&m.op, m.name.as_str()) {
            (MatchOp::Equal, "__name__") => {
                if metric.replace(m.value.clone()).is_some() {
                    return None;
                }
            }
            (MatchOp::Equal, name) if !m.value.is_empty() => {
                if equal.insert(name.to_string(), m.value.clone()).is_some() {
                    return None;
                }
            }
            (op, name) => {
                let op = match op {
                    MatchOp::Equal => "=",
                    MatchOp::NotEqual => "!=",
                    MatchOp::Re(_) => "=~",
                    MatchOp::NotRe(_) => "!~",
                };
                fixed.push(Fixed { name: name.to_string(), op, value: m.value.clone() });
            }
        }
    }
    let metric = metric.filter(|m| is_metric_name(m))?;
    if equal.is_empty() {
        return None;
    }
    fixed.sort();
    Some((metric, fixed, equal))
}

fn label_set(labels: &[String]) -> Option<Vec<String>> {
    let set: BTreeSet<&String> = labels.iter().collect();
    set.into_iter().map(|l| is_label_name(l).then(|| l.clone())).collect()
}

fn whole_millis(d: Duration) -> Option<Duration> {
    (d.subsec_nanos().is_multiple_of(1_000_000) && !d.is_zero()).then_some(d)
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A value that means the same in any PromQL quoting: `promql-parser` keeps a string's escapes, and
/// does not tell which quote it had, so only values without escapes are certain.
fn plain_value(value: &str) -> bool {
    !value.chars().any(|c| matches!(c, '\\' | '"' | '\'' | '`') || c.is_control())
}

/// Go's `regexp.QuoteMeta`: the value as an RE2 regex that matches exactly it.
fn quote_meta(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len());
    for c in value.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted
}

/// `values` as one PromQL string's content: an RE2 alternation of the escaped values, its
/// backslashes doubled for the string literal.
fn alternation(values: &[&str]) -> String {
    values.iter().map(|v| quote_meta(v).replace('\\', r"\\")).collect::<Vec<_>>().join("|")
}

fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

impl Shape {
    /// The query with `values` for the labels; with `vary`, the label at that index matches any
    /// of the given values instead, and the aggregation keeps it apart.
    fn render(&self, values: &[String], vary: Option<(usize, &[&str])>) -> String {
        let varied = vary.map(|(i, _)| self.labels[i].as_str());
        let mut q = String::from(self.aggregation);
        let list = |labels: Vec<&str>| labels.join(", ");
        match (&self.grouping, varied) {
            (Grouping::All, None) => {}
            (Grouping::All, Some(l)) => q += &format!(" by ({l})"),
            (Grouping::By(by), _) => {
                let mut labels: Vec<&str> = by.iter().map(String::as_str).collect();
                if let Some(l) = varied
                    && !labels.contains(&l)
                {
                    labels.push(l);
                }
                q += &format!(" by ({})", list(labels));
            }
            (Grouping::Without(without), _) => {
                let labels = without.iter().map(String::as_str).filter(|l| Some(*l) != varied).collect();
                q += &format!(" without ({})", list(labels));
            }
        }
        let mut matchers: Vec<String> = self
            .labels
            .iter()
            .zip(values)
            .enumerate()
            .map(|(i, (label, value))| match vary {
                Some((j, alternatives)) if i == j => format!("{label}=~\"{}\"", alternation(alternatives)),
                _ => format!("{label}=\"{value}\""),
            })
            .collect();
        matchers.extend(self.fixed.iter().map(|f| format!("{}{}\"{}\"", f.name, f.op, f.value)));
        let mut selector = format!("{}{{{}}}", self.metric, matchers.join(", "));
        if let Some((_, range)) = self.function {
            selector += &format!("[{}]", duration(range));
        }
        if let Some(offset) = self.offset {
            selector += &format!(" offset {}", duration(offset));
        }
        match self.function {
            Some((function, _)) => q += &format!(" ({function}({selector}))"),
            None => q += &format!(" ({selector})"),
        }
        q
    }
}

/// A member of a group, as the plan needs it.
#[derive(Clone, Copy, Debug)]
pub struct PlanMember<'a> {
    /// Its query as written.
    pub query: &'a str,
    /// Its values of the shape's labels ([`Recognised::values`]).
    pub values: &'a [String],
}

/// One query of a poll, and who reads its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The query to run.
    pub query: String,
    /// The label that tells the members' series apart; `None`: the query is one member's own (all
    /// its members have the same values) and each reads the whole answer.
    pub split: Option<String>,
    /// The members (indices into the planned slice), each with its value of `split`.
    pub members: Vec<(usize, String)>,
}

/// The queries that answer every member of a group of `shape`: members that differ in one
/// label only share a query (the label is chosen so that the fewest queries result), split so that
/// no query is longer than `budget` bytes.
pub fn plan(shape: &Shape, members: &[PlanMember<'_>], budget: usize) -> Vec<Batch> {
    let vary = varying_label(shape, members);
    // The other labels' values → the varying label's values → the members with them.
    let mut buckets: BTreeMap<Vec<&str>, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        let others = m.values.iter().enumerate().filter(|(j, _)| *j != vary).map(|(_, v)| v.as_str()).collect();
        buckets.entry(others).or_default().entry(m.values[vary].as_str()).or_default().push(i);
    }
    let mut batches = Vec::new();
    for by_value in buckets.into_values() {
        let template = members[by_value.values().next().map_or(0, |ids| ids[0])].values;
        let base = shape.render(template, Some((vary, &[]))).len();
        let mut chunk: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut length = base;
        for (value, ids) in by_value {
            let more = alternation(&[value]).len() + 1;
            if !chunk.is_empty() && length + more > budget {
                batches.push(batch(shape, members, vary, std::mem::take(&mut chunk)));
                length = base;
            }
            chunk.push((value, ids));
            length += more;
        }
        if !chunk.is_empty() {
            batches.push(batch(shape, members, vary, chunk));
        }
    }
    batches
}

fn batch(shape: &Shape, members: &[PlanMember<'_>], vary: usize, chunk: Vec<(&str, Vec<usize>)>) -> Batch {
    let first = members[chunk[0].1[0]];
    let readers = chunk.iter().flat_map(|(v, ids)| ids.iter().map(|i| (*i, v.to_string()))).collect();
    if let [(_, _)] = chunk.as_slice() {
        return Batch { query: first.query.to_string(), split: None, members: readers };
    }
    let values: Vec<&str> = chunk.iter().map(|(v, _)| *v).collect();
    let query = shape.render(first.values, Some((vary, &values)));
    Batch { query, split: Some(shape.labels[vary].clone()), members: readers }
}

/// The label to vary: the one that leaves the fewest distinct combinations of the others.
fn varying_label(shape: &Shape, members: &[PlanMember<'_>]) -> usize {
    (0..shape.labels.len())
        .min_by_key(|&vary| {
            let others: BTreeSet<Vec<&str>> = members
                .iter()
                .map(|m| m.values.iter().enumerate().filter(|(j, _)| *j != vary).map(|(_, v)| v.as_str()).collect())
                .collect();
            others.len()
        })
        .unwrap_or(0)
}

/// A grouped query's answer, its series by their value of `label` (series without it are left
/// out). Fails as a whole when the answer is not a successful instant vector.
pub fn split(body: &[u8], label: &str) -> Result<HashMap<String, Vec<Value>>, QueryError> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| QueryError::Body(e.to_string()))?;
    super::prometheus::prometheus_error(&doc)?;
    if doc["data"]["resultType"].as_str().is_some_and(|t| t != "vector") {
        return Err(QueryError::Body("a grouped query must answer an instant vector".into()));
    }
    let Value::Array(series) = doc["data"]["result"].take() else {
        return Err(QueryError::Body("data.result is missing or not a list".into()));
    };
    let mut by_value: HashMap<String, Vec<Value>> = HashMap::new();
    for one in series {
        if let Some(value) = one["metric"][label].as_str() {
            by_value.entry(value.to_string()).or_default().push(one);
        }
    }
    Ok(by_value)
}

/// One member's reading from a split answer, under KEDA's rules with its own `ignoreNullValues`.
pub fn member_value(
    split: &HashMap<String, Vec<Value>>,
    value: &str,
    ignore_null_values: bool,
) -> Result<f64, QueryError> {
    interpret_series(split.get(value).map_or(&[][..], Vec::as_slice), ignore_null_values)
}

/// A query short enough to be quoted in an error: at most 240 characters.
pub fn abbreviated(query: &str) -> String {
    match query.char_indices().nth(240) {
        Some((cut, _)) => format!("{}…", &query[..cut]),
        None => query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(query: &str) -> Recognised {
        recognise(query).unwrap_or_else(|| panic!("groupable: {query}"))
    }

    /// The grouped query for `template` with `{}` replaced by each of `apps`.
    fn grouped(template: &str, apps: &[&str]) -> Vec<Batch> {
        grouped_within(template, apps, QUERY_BUDGET)
    }

    fn grouped_within(template: &str, apps: &[&str], budget: usize) -> Vec<Batch> {
        let queries: Vec<String> = apps.iter().map(|a| template.replace("{}", a)).collect();
        let found: Vec<Recognised> = queries.iter().map(|q| shape_of(q)).collect();
        let members: Vec<PlanMember> =
            queries.iter().zip(&found).map(|(q, r)| PlanMember { query: q, values: &r.values }).collect();
        for r in &found {
            assert_eq!(r.shape, found[0].shape, "one shape");
        }
        plan(&found[0].shape, &members, budget)
    }

    fn one_query(template: &str, apps: &[&str]) -> String {
        let batches = grouped(template, apps);
        assert_eq!(batches.len(), 1, "{batches:?}");
        batches[0].query.clone()
    }

    #[test]
    fn the_shapes_and_their_grouped_queries() {
        let cases = [
            (
                r#"sum(rate(http_requests_total{app="{}"}[1m]))"#,
                r#"sum by (app) (rate(http_requests_total{app=~"a|b"}[1m]))"#,
            ),
            (
                r#"sum(irate(http_requests_total{namespace="prod", app="{}"}[30s]))"#,
                r#"sum by (app) (irate(http_requests_total{app=~"a|b", namespace="prod"}[30s]))"#,
            ),
            (
                r#"sum by (code) (increase(x{app="{}", code=~"2.."}[5m]))"#,
                r#"sum by (code, app) (increase(x{app=~"a|b", code=~"2.."}[5m]))"#,
            ),
            (r#"sum by (app) (rate(x{app="{}"}[1m]))"#, r#"sum by (app) (rate(x{app=~"a|b"}[1m]))"#),
            (r#"sum(rate(x{app="{}"}[1m])) by (pod, app)"#, r#"sum by (app, pod) (rate(x{app=~"a|b"}[1m]))"#),
            (r#"sum without (pod) (rate(x{app="{}"}[1m]))"#, r#"sum without (pod) (rate(x{app=~"a|b"}[1m]))"#),
            (r#"sum without (app, pod) (rate(x{app="{}"}[1m]))"#, r#"sum without (pod) (rate(x{app=~"a|b"}[1m]))"#),
            (r#"sum without (app) (rate(x{app="{}"}[1m]))"#, r#"sum without () (rate(x{app=~"a|b"}[1m]))"#),
            (r#"(sum((rate(x{app="{}"}[90s]))))"#, r#"sum by (app) (rate(x{app=~"a|b"}[90s]))"#),
            (r#"sum(x{app="{}"})"#, r#"sum by (app) (x{app=~"a|b"})"#),
            (r#"max({__name__="x", app="{}"} offset 1m)"#, r#"max by (app) (x{app=~"a|b"} offset 1m)"#),
            (
                r#"avg(rate(x{app='{}', le=""}[1m] offset 1500ms))"#,
                r#"avg by (app) (rate(x{app=~"a|b", le=""}[1m] offset 1500ms))"#,
            ),
            (r#"count(x{app="{}", pod!="p"})"#, r#"count by (app) (x{app=~"a|b", pod!="p"})"#),
            (r#"min(x{app="{}", pod!~"canary-.*"})"#, r#"min by (app) (x{app=~"a|b", pod!~"canary-.*"})"#),
        ];
        for (template, expected) in cases {
            assert_eq!(one_query(template, &["b", "a"]), expected, "{template}");
            // What this module writes, Prometheus's grammar reads (as far as promql-parser knows it).
            assert!(parser::parse(expected).is_ok(), "{expected}");
        }
    }

    #[test]
    fn what_is_not_groupable_runs_alone() {
        for query in [
            r#"rate(x{app="a"}[1m])"#,                      // no aggregation: one series per app anyway
            r#"sum(rate(x{app=~"a"}[1m]))"#,                // no equality matcher
            r#"sum(rate(x[1m]))"#,                          // no matcher at all
            r#"sum(rate({app="a"}[1m]))"#,                  // no metric name: series may collide
            r#"sum(rate({__name__=~"x|y", app="a"}[1m]))"#, // neither
            r#"topk(1, rate(x{app="a"}[1m]))"#,             // a parameter
            r#"quantile(0.9, x{app="a"})"#,                 // a parameter
            r#"stddev(x{app="a"})"#,                        // not one of the aggregations
            r#"sum(delta(x{app="a"}[1m]))"#,                // not one of the functions
            r#"sum(rate(x{app="a"}[1m:10s]))"#,             // a subquery
            r#"sum(rate(x{app="a"}[1m])) / 2"#,             // arithmetic
            r#"sum(rate(x{app="a"}[1m])) / sum(rate(y{app="a"}[1m]))"#,
            r#"sum(rate(x{app="a"}[1m] @ 100))"#,      // @
            r#"sum(rate(x{app="a"}[1m] offset -1m))"#, // negative offset
            r#"sum(x{app="a" or app="b"})"#,           // or
            r#"sum(x{app="a", app="b"})"#,             // one label, two values
            r#"sum(x{app="a\"b"})"#,                   // an escape
            r#"sum(x{app='a"b'})"#,                    // a quote
            r#"sum(x{app="a", path=~"a\\.b"})"#,       // an escape in a fixed matcher
            r#"sum(x{app="a"}"#,                       // not PromQL
            r#"sum(x{app=""})"#,                       // the empty value means "no such label"
        ] {
            assert_eq!(recognise(query), None, "{query}");
        }
        // Too deep or too long to read: never handed to the parser, whose recursion could overflow.
        let deep = format!("{}x{{app=\"a\"}}{}", "sum(".repeat(5000), ")".repeat(5000));
        let long = format!("sum(x{{app=\"a\", path=~\"{}\"}})", "a".repeat(MAX_QUERY_BYTES));
        for query in [deep, long] {
            assert_eq!(recognise(&query), None);
        }
        assert!(recognise(&format!("sum(x{{app=\"a\", path=~\"{}\"}})", "a".repeat(1000))).is_some());
    }

    #[test]
    fn equal_shapes_whatever_the_matcher_order() {
        let a = shape_of(r#"sum(rate(x{namespace="prod", app="a", code=~"2.."}[1m]))"#);
        let b = shape_of(r#"sum(rate(x{code=~"2..",app="b",namespace="prod"}[60s]))"#);
        assert_eq!(a.shape, b.shape);
        assert_eq!(a.values, vec!["a", "prod"]);
        assert_eq!(b.values, vec!["b", "prod"]);
        let other_range = shape_of(r#"sum(rate(x{namespace="prod", app="a", code=~"2.."}[2m]))"#);
        assert_ne!(a.shape, other_range.shape);
        let other_fixed = shape_of(r#"sum(rate(x{namespace="prod", app="a", code=~"5.."}[1m]))"#);
        assert_ne!(a.shape, other_fixed.shape);
        let other_by = shape_of(r#"sum by (pod) (rate(x{namespace="prod", app="a", code=~"2.."}[1m]))"#);
        assert_ne!(a.shape, other_by.shape);
    }

    #[test]
    fn values_are_regex_escaped_and_match_only_themselves() {
        let apps = ["a.b", "c+d", "e|f", "g(h)", "i[j]", "k{2}", "^l$", "m*?", "n-o_p/q", "ü"];
        let query = one_query(r#"sum(rate(x{app="{}"}[1m]))"#, &apps);
        let Ok(Expr::Aggregate(aggregate)) = parser::parse(&query) else { panic!("{query}") };
        let Expr::Call(call) = *aggregate.expr else { panic!("{query}") };
        let Expr::MatrixSelector(matrix) = call.args.args[0].as_ref() else { panic!("{query}") };
        let matcher = &matrix.vs.matchers.matchers[0];
        for app in apps {
            assert!(matcher.is_match(app), "{app} in {query}");
        }
        for other in ["axb", "cd", "ccd", "e", "f", "gh", "ij", "kk", "l", "m", "mmm", "", "a.bc", "xa.b"] {
            assert!(!matcher.is_match(other), "{other} must not match {query}");
        }
    }

    #[test]
    fn many_members_are_split_into_queries_within_the_budget() {
        let apps: Vec<String> = (0..5000).map(|i| format!("service-number-{i:04}")).collect();
        let names: Vec<&str> = apps.iter().map(String::as_str).collect();
        let batches = grouped(r#"sum(rate(http_requests_total{app="{}", namespace="prod"}[1m]))"#, &names);
        assert!(batches.len() > 1 && batches.len() < 20, "{} batches", batches.len());
        let mut seen = BTreeSet::new();
        for b in &batches {
            assert!(b.query.len() <= QUERY_BUDGET, "{} bytes", b.query.len());
            assert_eq!(b.split.as_deref(), Some("app"));
            assert!(parser::parse(&b.query).is_ok());
            seen.extend(b.members.iter().map(|(i, v)| (*i, v.clone())));
        }
        let expected: BTreeSet<(usize, String)> = apps.iter().cloned().enumerate().collect();
        assert_eq!(seen, expected, "every member read exactly once, with its own value");
    }

    #[test]
    fn one_value_runs_its_own_query() {
        let template = r#"sum(rate(x{app="{}"}[1m]))"#;
        let batches = grouped(template, &["a"]);
        assert_eq!(
            batches,
            vec![Batch { query: template.replace("{}", "a"), split: None, members: vec![(0, "a".into())] }]
        );
        // Two targets of one app (say strict and lenient about empty results): one query, both read it.
        let batches = grouped(template, &["a", "a"]);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].split, None);
        assert_eq!(batches[0].members, vec![(0, "a".into()), (1, "a".into())]);
        // A value too long to share the budget with another goes alone, as written.
        let long = "l".repeat(1000);
        let batches = grouped_within(template, &["a", "b", &long], 1000);
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[1].split, None);
        assert_eq!(batches[1].members, vec![(2, long)]);
    }

    #[test]
    fn the_label_that_varies_is_the_one_that_groups_most() {
        // Same namespace, different apps: vary `app`, one query.
        let apps = ["a", "b", "c"];
        let batches = grouped(r#"sum(rate(x{namespace="prod", app="{}"}[1m]))"#, &apps);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].split.as_deref(), Some("app"));
        // Same app, different namespaces: vary `namespace`.
        let batches = grouped(r#"sum(rate(x{namespace="{}", app="web"}[1m]))"#, &apps);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].query, r#"sum by (namespace) (rate(x{app="web", namespace=~"a|b|c"}[1m]))"#);
        // Two namespaces of the same apps: one query per namespace.
        let queries: Vec<String> = ["prod", "dev"]
            .iter()
            .flat_map(|ns| apps.iter().map(move |a| format!(r#"sum(rate(x{{namespace="{ns}", app="{a}"}}[1m]))"#)))
            .chain([r#"sum(rate(x{namespace="dev", app="d"}[1m]))"#.to_string()])
            .collect();
        let found: Vec<Recognised> = queries.iter().map(|q| shape_of(q)).collect();
        let members: Vec<PlanMember> =
            queries.iter().zip(&found).map(|(q, r)| PlanMember { query: q, values: &r.values }).collect();
        let batches = plan(&found[0].shape, &members, QUERY_BUDGET);
        let written: Vec<&str> = batches.iter().map(|b| b.query.as_str()).collect();
        assert_eq!(
            written,
            [
                r#"sum by (app) (rate(x{app=~"a|b|c|d", namespace="dev"}[1m]))"#,
                r#"sum by (app) (rate(x{app=~"a|b|c", namespace="prod"}[1m]))"#,
            ]
        );
    }

    fn answer(series: &[(&str, &str)]) -> String {
        let series: Vec<String> = series
            .iter()
            .map(|(app, v)| format!(r#"{{"metric":{{"app":"{app}"}},"value":[1700000000.1,"{v}"]}}"#))
            .collect();
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#, series.join(","))
    }

    #[test]
    fn each_member_reads_its_own_series_under_its_own_rules() {
        let body = answer(&[("a", "12.5"), ("nan", "NaN"), ("two", "1"), ("two", "2")]);
        let split = split(body.as_bytes(), "app").unwrap();
        let cases: [(&str, bool, Result<f64, QueryError>); 8] = [
            ("a", false, Ok(12.5)),
            ("a", true, Ok(12.5)),
            ("missing", true, Ok(0.0)),
            ("missing", false, Err(QueryError::Empty)),
            ("nan", true, Ok(0.0)),
            ("nan", false, Err(QueryError::NotFinite("NaN".into()))),
            ("two", true, Err(QueryError::MultipleSeries(2))),
            ("two", false, Err(QueryError::MultipleSeries(2))),
        ];
        for (app, ignore_null, expected) in cases {
            assert_eq!(member_value(&split, app, ignore_null), expected, "{app} {ignore_null}");
        }
    }

    #[test]
    fn an_answer_that_is_not_a_vector_fails_every_member() {
        let failed = r#"{"status":"error","errorType":"execution","error":"query timed out"}"#;
        assert_eq!(split(failed.as_bytes(), "app").unwrap_err(), QueryError::Query("query timed out".into()));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
        assert!(matches!(split(scalar.as_bytes(), "app"), Err(QueryError::Body(_))));
        assert!(matches!(split(b"<html>", "app"), Err(QueryError::Body(_))));
    }

    #[test]
    fn long_queries_are_abbreviated_in_errors() {
        assert_eq!(abbreviated("sum(x)"), "sum(x)");
        let long = "é".repeat(300);
        assert_eq!(abbreviated(&long).chars().count(), 241);
    }
}
