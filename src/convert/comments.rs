//! Comments of a rewritten document carried into its new text.
//!
//! A document the conversion changes is written anew from its value, which has no comments. This
//! module reads where each comment stood in the old text (before which node, or at the end of
//! which line), follows the node to where the conversion moved it ([`Moves`]: a trigger folded
//! into another, a key renamed), and puts the comment back there. A comment whose node is gone
//! goes before the next node of the old text that still exists, so no comment is lost.
//!
//! It reads block-style YAML line by line, as Kubernetes manifests are written: mappings,
//! sequences (indented or not), flow collections on one or more lines, block and quoted scalars.
//! It does not validate YAML; the parser has already done that.

/// One step of a path into a document: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A node's place in a document, e.g. `spec.triggers[2].metadata`.
pub(crate) type Path = Vec<Seg>;

/// `spec.triggers[i]`, the path of one trigger of a ScaledObject.
pub(crate) fn trigger_path(index: usize) -> Path {
    vec![Seg::Key("spec".into()), Seg::Key("triggers".into()), Seg::Index(index)]
}

/// `base` followed by `keys`.
pub(crate) fn child(base: &[Seg], keys: &[&str]) -> Path {
    let mut path = base.to_vec();
    path.extend(keys.iter().map(|k| Seg::Key((*k).to_string())));
    path
}

/// Where the conversion moved nodes: the longest `from` that starts a path is replaced by its `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Moves(Vec<(Path, Path)>);

impl Moves {
    pub fn push(&mut self, from: Path, to: Path) {
        self.0.push((from, to));
    }

    /// The same moves for a document that was nested under `from` and is now under `to` (an
    /// item of a `List`, which other items may have pushed along).
    pub fn nested(&self, from: &Path, to: &Path) -> Moves {
        let join = |prefix: &Path, p: &Path| prefix.iter().chain(p).cloned().collect();
        Moves(self.0.iter().map(|(f, t)| (join(from, f), join(to, t))).collect())
    }

    pub fn extend(&mut self, other: Moves) {
        self.0.extend(other.0);
    }

    fn apply(&self, path: &Path) -> Path {
        let best = self.0.iter().filter(|(from, _)| path.starts_with(from)).max_by_key(|(from, _)| from.len());
        match best {
            Some((from, to)) => to.iter().chain(&path[from.len()..]).cloned().collect(),
            None => path.clone(),
        }
    }
}

/// What one line of a document is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    /// A line that starts a node: `start` is the outermost node it opens (`- a: 1` opens the
    /// item), `deepest` the innermost (the key `a`); `comment` is its trailing `# ...`, if any.
    Node { start: Path, deepest: Path, indent: usize, comment: Option<String> },
    /// A comment on a line of its own (trimmed).
    Comment(String),
    /// Blank, or the continuation of a scalar or flow collection.
    Other,
}

#[derive(Debug)]
struct Frame {
    indent: usize,
    path: Path,
    sequence: bool,
    next: usize,
}

/// Lines that belong to the node before them.
#[derive(Debug)]
enum Skip {
    None,
    /// A block scalar (`|`, `>`): every line indented past `owner`, or blank.
    Block {
        owner: usize,
    },
    /// A plain scalar that may go on: lines indented past `owner`.
    Plain {
        owner: usize,
    },
    /// A flow collection still open by `depth` brackets.
    Flow {
        depth: i32,
    },
    /// A quoted scalar still open.
    Quoted {
        quote: char,
    },
}

struct Indexer {
    frames: Vec<Frame>,
    /// A key (or `-`) without a value on its line: its children follow.
    pending: Option<(Path, usize)>,
    skip: Skip,
}

fn index(text: &str) -> Vec<Line> {
    let mut ix = Indexer { frames: Vec::new(), pending: None, skip: Skip::None };
    text.lines().map(|line| ix.line(line)).collect()
}

impl Indexer {
    fn line(&mut self, line: &str) -> Line {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let trimmed = trimmed.trim_end();
        match self.skip {
            Skip::Block { owner } if trimmed.is_empty() || indent > owner => return Line::Other,
            Skip::Quoted { quote } => {
                if closes_quote(trimmed, quote) {
                    self.skip = Skip::None;
                }
                return Line::Other;
            }
            Skip::Flow { depth } => {
                let depth = depth + bracket_balance(trimmed);
                self.skip = if depth > 0 { Skip::Flow { depth } } else { Skip::None };
                return Line::Other;
            }
            _ => {}
        }
        if trimmed.is_empty() {
            return Line::Other;
        }
        if trimmed.starts_with('#') {
            return Line::Comment(trimmed.to_string());
        }
        if let Skip::Plain { owner } = self.skip
            && indent > owner
        {
            return Line::Other;
        }
        self.skip = Skip::None;
        self.node(indent, trimmed).unwrap_or(Line::Other)
    }

    fn node(&mut self, col: usize, text: &str) -> Option<Line> {
        let is_item = text == "-" || text.starts_with("- ");
        if let Some((path, at)) = self.pending.take()
            && (col > at || (col == at && is_item))
        {
            self.frames.push(Frame { indent: col, path, sequence: is_item, next: 0 });
        }
        while self.frames.last().is_some_and(|f| f.indent > col || (!is_item && f.sequence && f.indent == col)) {
            self.frames.pop();
        }
        if is_item {
            self.item(col, text)
        } else {
            if self.frames.last().is_none_or(|f| f.indent < col) {
                let path = self.frames.last().map(|f| f.path.clone()).unwrap_or_default();
                self.frames.push(Frame { indent: col, path, sequence: false, next: 0 });
            }
            let parent = self.frames.last()?.path.clone();
            let (deepest, comment) = self.key(col, text, &parent)?;
            Some(Line::Node { start: deepest.clone(), deepest, indent: col, comment })
        }
    }

    fn item(&mut self, col: usize, text: &str) -> Option<Line> {
        let frame = match self.frames.last_mut() {
            Some(f) if f.sequence && f.indent == col => f,
            Some(_) => return None,
            None => {
                self.frames.push(Frame { indent: col, path: Vec::new(), sequence: true, next: 0 });
                self.frames.last_mut()?
            }
        };
        let mut start = frame.path.clone();
        start.push(Seg::Index(frame.next));
        frame.next += 1;
        let rest = text[1..].trim_start();
        let rest_col = col + text.len() - rest.len();
        if rest.is_empty() || rest.starts_with('#') {
            self.pending = Some((start.clone(), col));
            let comment = (!rest.is_empty()).then(|| rest.to_string());
            return Some(Line::Node { deepest: start.clone(), start, indent: col, comment });
        }
        if rest == "-" || rest.starts_with("- ") {
            self.frames.push(Frame { indent: rest_col, path: start.clone(), sequence: true, next: 0 });
            let inner = self.item(rest_col, rest)?;
            return Some(match inner {
                Line::Node { deepest, comment, .. } => Line::Node { start, deepest, indent: col, comment },
                other => other,
            });
        }
        if split_key(rest).is_some() {
            self.frames.push(Frame { indent: rest_col, path: start.clone(), sequence: false, next: 0 });
            let (deepest, comment) = self.key(rest_col, rest, &start)?;
            return Some(Line::Node { start, deepest, indent: col, comment });
        }
        let comment = self.value(col, rest, &start);
        Some(Line::Node { deepest: start.clone(), start, indent: col, comment })
    }

    /// A `key: value` line at `col` inside the mapping at `parent`: the key's path and the
    /// line's trailing comment.
    fn key(&mut self, col: usize, text: &str, parent: &Path) -> Option<(Path, Option<String>)> {
        let (key, value) = split_key(text)?;
        let mut path = parent.clone();
        path.push(Seg::Key(key));
        let comment = self.value(col, value, &path);
        Some((path, comment))
    }

    /// Reads the value part of a line owned by the node at `path` (written at `col`); returns its comment.
    fn value(&mut self, col: usize, value: &str, path: &Path) -> Option<String> {
        let (code, comment) = split_comment(value);
        let mut code = code.trim();
        // Anchors and tags come before the value proper.
        while let Some(rest) = code.strip_prefix('&').or_else(|| code.strip_prefix('!')) {
            code = rest.split_once(' ').map_or("", |(_, after)| after.trim_start());
        }
        self.skip = match code.chars().next() {
            None => {
                self.pending = Some((path.clone(), col));
                Skip::None
            }
            Some('|' | '>') => Skip::Block { owner: col },
            Some('{' | '[') => match bracket_balance(code) {
                depth if depth > 0 => Skip::Flow { depth },
                _ => Skip::None,
            },
            Some(quote @ ('"' | '\'')) if !closes_quote(&code[1..], quote) => Skip::Quoted { quote },
            Some('"' | '\'') => Skip::None,
            Some(_) => Skip::Plain { owner: col },
        };
        comment.map(String::from)
    }
}

/// `key: rest` (or `key:`), the key unquoted; `None` if the text is no mapping entry.
fn split_key(text: &str) -> Option<(String, &str)> {
    if let Some(quote @ ('"' | '\'')) = text.chars().next() {
        let end = quoted_end(&text[1..], quote)? + 1;
        let rest = text[end + 1..].trim_start().strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        let key = text[1..end].replace("\\\"", "\"").replace("''", "'");
        return Some((key, rest));
    }
    if text.starts_with(['{', '[', '#', '&', '*', '!', '|', '>', '?']) {
        return None;
    }
    let mut search = 0;
    while let Some(at) = text[search..].find(':').map(|i| search + i) {
        let after = &text[at + 1..];
        if after.is_empty() || after.starts_with(' ') {
            let key = text[..at].trim_end();
            // A ` #` before the colon makes it a comment, not a key.
            if key.contains(" #") {
                return None;
            }
            return Some((key.to_string(), after));
        }
        search = at + 1;
    }
    None
}

/// The byte index in `text` of the quote that closes a scalar opened just before `text`.
fn quoted_end(text: &str, quote: char) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if quote == '"' && c == '\\' {
            chars.next();
        } else if c == quote {
            if quote == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
            } else {
                return Some(i);
            }
        }
    }
    None
}

fn closes_quote(text: &str, quote: char) -> bool {
    quoted_end(text, quote).is_some()
}

/// Opening minus closing brackets outside quotes and comments.
fn bracket_balance(text: &str) -> i32 {
    let (code, _) = split_comment(text);
    let mut depth = 0;
    let mut quote = None;
    let mut previous = ' ';
    for c in code.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if matches!(previous, ' ' | '{' | '[' | ',' | ':') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            _ => {}
        }
        previous = c;
    }
    depth
}

/// Splits a value at its trailing comment: a `#` at the start or after whitespace, outside quotes.
fn split_comment(text: &str) -> (&str, Option<&str>) {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if matches!(previous, ' ' | '{' | '[' | ',' | ':') => quote = Some(c),
            (None, '#') if previous == ' ' || previous == '\t' || i == 0 => {
                return (text[..i].trim_end(), Some(&text[i..]));
            }
            _ => {}
        }
        previous = c;
    }
    (text, None)
}

/// `new`, the rewritten body of a document, with the comments of `old`, its body as written,
/// each put back where its node went (`moves`).
pub(crate) fn carry(old: &str, new: &str, moves: &Moves) -> String {
    let old_lines = index(old);
    let new_lines = index(new);
    let position = |path: &Path| -> Option<usize> {
        let first = |deep: bool| {
            new_lines.iter().position(|l| match l {
                Line::Node { start, deepest, .. } => (if deep { deepest } else { start }) == path,
                _ => false,
            })
        };
        first(false).or_else(|| first(true))
    };
    // The node of each old line, moved; a comment goes before the first of those from its own
    // node on that still exists.
    let nodes: Vec<(usize, Path)> = old_lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match l {
            Line::Node { start, .. } => Some((i, moves.apply(start))),
            _ => None,
        })
        .collect();
    // A node that is gone: its comments go before the next node of the same parent that is still
    // there, else before the next node that is.
    let place = |line: usize, own: &Path| -> Option<usize> {
        let later = || nodes.iter().filter(move |(i, _)| *i >= line).map(|(_, p)| p);
        let parent = &own[..own.len().saturating_sub(1)];
        later()
            .filter(|p| p.len() == own.len() && p.starts_with(parent))
            .find_map(&position)
            .or_else(|| later().find_map(&position))
    };

    let mut before: Vec<Vec<String>> = vec![Vec::new(); new_lines.len() + 1];
    let mut trailing: Vec<Option<String>> = vec![None; new_lines.len()];
    let mut waiting: Vec<String> = Vec::new();
    for (i, line) in old_lines.iter().enumerate() {
        match line {
            Line::Comment(text) => waiting.push(text.clone()),
            Line::Node { start, deepest, comment, .. } => {
                if !waiting.is_empty() {
                    let at = place(i, &moves.apply(start)).unwrap_or(new_lines.len());
                    before[at].append(&mut waiting);
                }
                if let Some(comment) = comment {
                    let moved = moves.apply(deepest);
                    match position(&moved) {
                        Some(at) if trailing[at].is_none() => trailing[at] = Some(comment.clone()),
                        _ => before[place(i + 1, &moved).unwrap_or(new_lines.len())].push(comment.clone()),
                    }
                }
            }
            Line::Other => {}
        }
    }
    before[new_lines.len()].append(&mut waiting);

    let mut out = String::with_capacity(new.len() + old.len() / 4);
    for (i, text) in new.lines().enumerate() {
        let indent = match &new_lines[i] {
            Line::Node { indent, .. } => *indent,
            _ => text.len() - text.trim_start().len(),
        };
        for comment in &before[i] {
            out.push_str(&" ".repeat(indent));
            out.push_str(comment);
            out.push('\n');
        }
        out.push_str(text);
        if let Some(comment) = &trailing[i] {
            out.push(' ');
            out.push_str(comment);
        }
        out.push('\n');
    }
    for comment in &before[new_lines.len()] {
        out.push_str(comment);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    fn starts(text: &str) -> Vec<Path> {
        index(text)
            .into_iter()
            .filter_map(|l| match l {
                Line::Node { start, .. } => Some(start),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn paths_follow_mappings_and_both_sequence_styles() {
        let text =
            "spec:\n  triggers:\n  - type: a\n    metadata:\n      q: x\n  - type: b\n  other:\n    - 1\n    - 2\n";
        assert_eq!(
            starts(text),
            [
                vec![key("spec")],
                vec![key("spec"), key("triggers")],
                vec![key("spec"), key("triggers"), Seg::Index(0)],
                vec![key("spec"), key("triggers"), Seg::Index(0), key("metadata")],
                vec![key("spec"), key("triggers"), Seg::Index(0), key("metadata"), key("q")],
                vec![key("spec"), key("triggers"), Seg::Index(1)],
                vec![key("spec"), key("other")],
                vec![key("spec"), key("other"), Seg::Index(0)],
                vec![key("spec"), key("other"), Seg::Index(1)],
            ]
        );
    }

    #[test]
    fn scalars_and_flow_collections_over_several_lines_are_one_node() {
        let text =
            "a: |\n  # not a comment\n  b: c\nd: {e: 1,\n  f: 2}\ng: \"x\n  y\"\nh: plain\n  more\ni: 'it''s' # c\n";
        let lines = index(text);
        assert_eq!(starts(text), [vec![key("a")], vec![key("d")], vec![key("g")], vec![key("h")], vec![key("i")]]);
        assert!(!lines.iter().any(|l| matches!(l, Line::Comment(_))), "{lines:?}");
        assert!(matches!(&lines[9], Line::Node { comment: Some(c), .. } if c == "# c"));
    }

    #[test]
    fn keys_may_be_quoted_or_hold_colons_and_urls_keep_their_hash() {
        let text = "\"a b\": 1\nx:y: 2\nurl: http://h/p#frag # real\nlabels:\n  core.spinkube.dev/app-name: x\n";
        let lines = index(text);
        assert_eq!(
            starts(text),
            [
                vec![key("a b")],
                vec![key("x:y")],
                vec![key("url")],
                vec![key("labels")],
                vec![key("labels"), key("core.spinkube.dev/app-name")]
            ]
        );
        assert!(matches!(&lines[2], Line::Node { comment: Some(c), .. } if c == "# real"));
    }

    #[test]
    fn comments_follow_their_nodes_to_the_new_text() {
        let old = "spec:\n  # the rate\n  triggers:\n    # prometheus first\n    - type: prometheus # rate\n      \
                   metadata:\n        serverAddress: http://p # in-cluster\n        metricName: x # gone\n    \
                   # then lag\n    - type: kafka\n      metadata:\n        topic: t\n# the end\n";
        let new = "spec:\n  triggers:\n  - type: external-push\n    metadata:\n      prometheusAddress: http://p\n      \
                   topic: t\n";
        let mut moves = Moves::default();
        moves.push(trigger_path(1), trigger_path(0));
        moves.push(
            child(&trigger_path(0), &["metadata", "serverAddress"]),
            child(&trigger_path(0), &["metadata", "prometheusAddress"]),
        );
        let carried = carry(old, new, &moves);
        assert_eq!(
            carried,
            "spec:\n  # the rate\n  triggers:\n  # prometheus first\n  # then lag\n  - type: external-push # rate\n    \
             metadata:\n      prometheusAddress: http://p # in-cluster\n      # gone\n      topic: t\n# the end\n"
        );
    }

    /// Every document of every convert fixture and corpus input, written anew with its comments
    /// carried: the same value, and every comment of its own line still there.
    #[test]
    fn carrying_comments_never_changes_a_value_or_loses_a_comment() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut inputs = Vec::new();
        for dir in ["fixtures/convert", "convert-corpus"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("a test folder") {
                let path = entry.expect("an entry").path();
                let input = if path.is_dir() { path.join("input.yaml") } else { path };
                if input.extension().is_some_and(|e| e == "yaml") && input.is_file() {
                    inputs.push(input);
                }
            }
        }
        assert!(inputs.len() > 10, "{inputs:?}");
        for input in inputs {
            let text = std::fs::read_to_string(&input).expect("readable");
            for chunk in super::super::documents::split(&text) {
                let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&chunk.text).expect("valid YAML");
                if value.is_null() {
                    continue;
                }
                let new = serde_yaml_ng::to_string(&value).expect("writable");
                let carried = carry(&chunk.text, &new, &Moves::default());
                let again: serde_yaml_ng::Value = serde_yaml_ng::from_str(&carried).expect("still YAML");
                assert_eq!(again, value, "{}:\n{carried}", input.display());
                let comments = index(&chunk.text).into_iter().filter_map(|l| match l {
                    Line::Comment(c) => Some(c),
                    Line::Node { comment, .. } => comment,
                    Line::Other => None,
                });
                for comment in comments {
                    assert!(carried.contains(&comment), "{}: {comment:?} lost:\n{carried}", input.display());
                }
            }
        }
    }

    #[test]
    fn moves_take_the_longest_prefix_and_nest_under_list_items() {
        let mut moves = Moves::default();
        moves.push(trigger_path(2), trigger_path(0));
        moves.push(child(&trigger_path(2), &["metadata", "a"]), child(&trigger_path(0), &["metadata", "b"]));
        assert_eq!(
            moves.apply(&child(&trigger_path(2), &["metadata", "a"])),
            child(&trigger_path(0), &["metadata", "b"])
        );
        assert_eq!(moves.apply(&child(&trigger_path(2), &["name"])), child(&trigger_path(0), &["name"]));
        let (item, moved) = (vec![key("items"), Seg::Index(3)], vec![key("items"), Seg::Index(4)]);
        let nested = moves.nested(&item, &moved);
        assert_eq!(nested.apply(&[item, trigger_path(2)].concat()), [moved, trigger_path(0)].concat());
    }
}
