//! Multi-document YAML split into documents that keep their own text, so a document the
//! conversion leaves alone is written back exactly as it came (comments and layout included),
//! and one it rewrites keeps its comments (`comments`).

use serde_yaml_ng::Value;

use super::comments::{self, Moves};
use super::{COMMENT_PREFIX, ConvertError, DocRef};

/// One document's text, without its `---` marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub text: String,
    /// 1-based line of the input where `text` starts.
    pub first_line: usize,
}

impl Chunk {
    /// Nothing but whitespace (comment-only documents are kept, they are not blank).
    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }

    /// The input line of the document's first line that is neither blank nor a comment.
    pub fn content_line(&self) -> usize {
        self.first_line + leading_comments(&self.text)
    }
}

/// Splits at document markers: a line `---` (optionally followed by content on the same line) or
/// `...`, at column 0. YAML forbids these lines inside a document, block scalars included.
pub(crate) fn split(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = Chunk { text: String::new(), first_line: 1 };
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_number = index + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = marker_rest(bare, "---") {
            // Content may follow the marker on its own line (`--- {a: 1}`).
            let rest = rest.trim_start();
            let next = if rest.is_empty() { line_number + 1 } else { line_number };
            chunks.push(std::mem::replace(&mut current, Chunk { text: String::new(), first_line: next }));
            if !rest.is_empty() {
                current.text.push_str(rest);
                current.text.push('\n');
            }
        } else if marker_rest(bare, "...").is_some() {
            let next = Chunk { text: String::new(), first_line: line_number + 1 };
            chunks.push(std::mem::replace(&mut current, next));
        } else {
            current.text.push_str(line);
        }
    }
    chunks.push(current);
    chunks
}

/// How many lines at the start of `text` are blank or comments.
fn leading_comments(text: &str) -> usize {
    text.lines().take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#')).count()
}

fn marker_rest<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

/// Parses one document; errors give the line in the whole input.
pub(crate) fn parse(chunk: &Chunk) -> Result<Value, ConvertError> {
    // Leading newlines make the parser's line numbers those of the whole input.
    let padded = "\n".repeat(chunk.first_line.saturating_sub(1)) + &chunk.text;
    serde_yaml_ng::from_str(&padded).map_err(|e| ConvertError {
        document: format!("document at line {}", chunk.first_line),
        field: String::new(),
        message: format!("not valid YAML: {e}"),
    })
}

/// A document's text for the output: its leading comments, then one comment per note (unless
/// the same comment is there already: converting converted output changes nothing), then either
/// its own text (`body` None) or `body` written anew with the comments of its own text carried
/// over to where `moves` took their nodes.
pub(crate) fn emit(
    chunk: &Chunk,
    notes: &[String],
    body: Option<&Value>,
    moves: &Moves,
    doc: &DocRef,
) -> Result<String, ConvertError> {
    let lines: Vec<&str> = chunk.text.split_inclusive('\n').collect();
    let leading = leading_comments(&chunk.text);
    let mut out: String = lines[..leading].concat();
    let present: Vec<&str> = lines[..leading].iter().map(|l| l.trim_end()).collect();
    for note in notes {
        let comment = format!("{COMMENT_PREFIX}{}", note.replace('\n', " "));
        if !present.contains(&comment.trim_end()) {
            out.push_str(&comment);
            out.push('\n');
        }
    }
    match body {
        None => out.push_str(&lines[leading..].concat()),
        Some(value) => {
            let written = serde_yaml_ng::to_string(value)
                .map_err(|e| doc.error("", format!("cannot be written as YAML: {e}")))?;
            out.push_str(&comments::carry(&lines[leading..].concat(), &written, moves));
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(chunks: &[Chunk]) -> Vec<(&str, usize)> {
        chunks.iter().map(|c| (c.text.as_str(), c.first_line)).collect()
    }

    #[test]
    fn splits_at_markers_and_keeps_each_document_text() {
        let chunks = split("# head\na: 1\n---\nb: 2\n--- {c: 3}\n...\n# tail\n---   \n");
        assert_eq!(texts(&chunks), [("# head\na: 1\n", 1), ("b: 2\n", 4), ("{c: 3}\n", 5), ("# tail\n", 7), ("", 9)]);
        assert_eq!(chunks[0].content_line(), 2);
        assert!(chunks[4].is_blank() && !chunks[3].is_blank());
    }

    #[test]
    fn markers_count_only_at_column_zero_and_alone() {
        let chunks = split("a: |\n  ---\n  text\nb: ---x\n----\n");
        assert_eq!(chunks.len(), 1, "{chunks:?}");
    }

    #[test]
    fn parse_errors_give_the_line_of_the_whole_input() {
        let chunks = split("a: 1\n---\nb: [1, 2\n");
        let err = parse(&chunks[1]).expect_err("unclosed list");
        assert_eq!(err.document, "document at line 3");
        assert!(err.message.contains("line 4") || err.message.contains("line 3"), "{err}");
    }

    #[test]
    fn emit_keeps_leading_comments_then_notes_then_the_body() {
        let chunk = Chunk { text: "# about x\nkind: X # inline\n".into(), first_line: 1 };
        let doc = DocRef { label: "d".into() };
        let moves = Moves::default();
        let kept = emit(&chunk, &["one".into()], None, &moves, &doc).expect("emits");
        assert_eq!(kept, "# about x\n# spinscale convert: one\nkind: X # inline\n");
        let value: Value = serde_yaml_ng::from_str("kind: Y").expect("yaml");
        let rewritten = emit(&chunk, &[], Some(&value), &moves, &doc).expect("emits");
        assert_eq!(rewritten, "# about x\nkind: Y # inline\n");
    }

    #[test]
    fn a_note_already_written_as_a_comment_is_not_written_again() {
        let chunk = Chunk { text: "# spinscale convert: one\nkind: X\n".into(), first_line: 1 };
        let doc = DocRef { label: "d".into() };
        let again = emit(&chunk, &["one".into(), "two".into()], None, &Moves::default(), &doc).expect("emits");
        assert_eq!(again, "# spinscale convert: one\n# spinscale convert: two\nkind: X\n");
    }
}
