//! The input read into documents, and the converted documents written back in input order.
//!
//! The items of a `List` become documents of their own for the conversion ([`read`]) and go back
//! into their List when written ([`write`]), with the documents `--activator` adds after an item
//! as further items.

use serde_yaml_ng::{Mapping, Value};

use super::activator::Plan;
use super::comments::{Moves, Path, Seg};
use super::documents::{self, Chunk};
use super::{ConvertError, DocRef, Document, Note, Outcome, lists, str_at};

/// A document of the output: one of the input, or a List of several.
pub(crate) enum Slot {
    Whole(usize),
    List(ListDoc),
}

/// A List of the input: its own text and value, and where its items are among the documents.
pub(crate) struct ListDoc {
    chunk: Chunk,
    value: Value,
    doc: DocRef,
    first: usize,
    count: usize,
}

/// The documents of `text`, List items as documents of their own, and the order to write them in.
pub(crate) fn read(text: &str) -> Result<(Vec<Document>, Vec<Slot>), ConvertError> {
    let mut docs = Vec::new();
    let mut slots = Vec::new();
    let mut number = 0;
    for chunk in documents::split(text) {
        if chunk.is_blank() {
            continue;
        }
        let value = documents::parse(&chunk)?;
        let label = match value.as_mapping() {
            _ if value.is_null() => format!("comments at line {}", chunk.first_line),
            Some(object) => {
                number += 1;
                label(number, object, chunk.content_line())
            }
            None => {
                number += 1;
                format!("document {number} (line {})", chunk.content_line())
            }
        };
        let doc = DocRef { label };
        if lists::is_list(&value) {
            let first = docs.len();
            for (i, item) in lists::items(&value, &doc)?.into_iter().enumerate() {
                let label = format!("{} {}", doc.label, lists::item_name(i, &item));
                let text = serde_yaml_ng::to_string(&item).unwrap_or_default();
                let chunk = Chunk { text, first_line: chunk.first_line };
                docs.push(Document { chunk, value: item, doc: DocRef { label } });
            }
            let count = docs.len() - first;
            slots.push(Slot::List(ListDoc { chunk, value, doc, first, count }));
        } else {
            slots.push(Slot::Whole(docs.len()));
            docs.push(Document { chunk, value, doc });
        }
    }
    Ok((docs, slots))
}

/// `document N (Kind name, line L)`.
fn label(number: usize, object: &Mapping, line: usize) -> String {
    let kind = str_at(object, "kind").unwrap_or("object without kind");
    match object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) {
        Some(name) => format!("document {number} ({kind} {name}, line {line})"),
        None => format!("document {number} ({kind}, line {line})"),
    }
}

/// Writes every document (converted, with its outcome) in input order, with the documents `plan`
/// adds; returns the YAML and every note.
pub(crate) fn write(
    docs: &[Document],
    outcomes: &[Outcome],
    slots: Vec<Slot>,
    plan: &Plan,
) -> Result<(String, Vec<Note>), ConvertError> {
    let mut notes = Vec::new();
    let mut out = Vec::with_capacity(slots.len());
    let note = |document: &str, message: &str| Note { document: document.to_string(), message: message.to_string() };
    for slot in slots {
        match slot {
            Slot::Whole(index) => {
                let (doc, outcome) = (&docs[index], &outcomes[index]);
                notes.extend(outcome.notes.iter().map(|m| note(&doc.doc.label, m)));
                let body = outcome.changed.then_some(&doc.value);
                out.push(documents::emit(&doc.chunk, &outcome.notes, body, &outcome.moves, &doc.doc)?);
                for added in plan.added.get(&index).into_iter().flatten() {
                    let doc = DocRef { label: added.label.clone() };
                    notes.extend(added.notes.iter().map(|m| note(&doc.label, m)));
                    let chunk = Chunk { text: String::new(), first_line: 0 };
                    out.push(documents::emit(&chunk, &added.notes, Some(&added.value), &Moves::default(), &doc)?);
                }
            }
            Slot::List(list) => out.push(write_list(list, docs, outcomes, plan, &mut notes)?),
        }
    }
    Ok((out.join("---\n"), notes))
}

fn write_list(
    mut list: ListDoc,
    docs: &[Document],
    outcomes: &[Outcome],
    plan: &Plan,
    notes: &mut Vec<Note>,
) -> Result<String, ConvertError> {
    let item_path = |i: usize| -> Path { vec![Seg::Key("items".into()), Seg::Index(i)] };
    let mut items = Vec::with_capacity(list.count);
    let mut comments = Vec::new();
    let mut moves = Moves::default();
    let mut changed = false;
    for k in 0..list.count {
        let index = list.first + k;
        let (doc, outcome) = (&docs[index], &outcomes[index]);
        // Comments name items by their place in the output, which a second conversion keeps.
        let at = items.len();
        let name = lists::item_name(at, &doc.value);
        moves.push(item_path(k), item_path(at));
        moves.extend(outcome.moves.nested(&item_path(k), &item_path(at)));
        changed |= outcome.changed;
        for message in &outcome.notes {
            notes.push(Note { document: doc.doc.label.clone(), message: message.clone() });
            comments.push(format!("{name}: {message}"));
        }
        items.push(doc.value.clone());
        for added in plan.added.get(&index).into_iter().flatten() {
            let name = lists::item_name(items.len(), &added.value);
            for message in &added.notes {
                notes.push(Note { document: format!("{} {name}", list.doc.label), message: message.clone() });
                comments.push(format!("{name}: {message}"));
            }
            items.push(added.value.clone());
            changed = true;
        }
    }
    if changed && let Some(object) = list.value.as_mapping_mut() {
        object.insert("items".into(), Value::Sequence(items));
    }
    documents::emit(&list.chunk, &comments, changed.then_some(&list.value), &moves, &list.doc)
}
