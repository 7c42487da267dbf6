//! `kind: List`, what `kubectl get -o yaml` prints: its items are converted one by one, as if
//! each were a document of its own, and written back into the List.

use serde_yaml_ng::Value;

use super::{ConvertError, DocRef, show};

/// A `List` (or a typed list such as `ScaledObjectList`) with its `items`.
pub(crate) fn is_list(value: &Value) -> bool {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    kind == "List" || (kind.ends_with("List") && value.get("items").is_some_and(Value::is_sequence))
}

/// The items of a List, each checked to be an object.
pub(crate) fn items(value: &Value, doc: &DocRef) -> Result<Vec<Value>, ConvertError> {
    let items = match value.get("items") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(other) => return Err(doc.error("items", format!("is {}, not a list", show(other)))),
    };
    for (i, item) in items.iter().enumerate() {
        if !item.is_mapping() {
            return Err(doc.error(
                format!("items[{i}]"),
                format!("is {}, not a Kubernetes object (a mapping with apiVersion and kind)", show(item)),
            ));
        }
    }
    Ok(items.clone())
}

/// `items[i] (Kind name)`: an item in notes and in the List's comments.
pub(crate) fn item_name(i: usize, item: &Value) -> String {
    let kind = item.get("kind").and_then(Value::as_str).unwrap_or("object without kind");
    match item.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) {
        Some(name) => format!("items[{i}] ({kind} {name})"),
        None => format!("items[{i}] ({kind})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).expect("test YAML")
    }

    #[test]
    fn lists_are_told_by_kind_and_their_items_must_be_objects() {
        assert!(is_list(&value("{apiVersion: v1, kind: List, items: []}")));
        assert!(is_list(&value(
            "{apiVersion: keda.sh/v1alpha1, kind: ScaledObjectList, items: [{kind: ScaledObject}]}"
        )));
        assert!(!is_list(&value("{apiVersion: v1, kind: PodList}")));
        assert!(!is_list(&value("{apiVersion: v1, kind: ConfigMap, data: {kind: List}}")));
        let doc = DocRef { label: "document 1 (List, line 1)".into() };
        let err = items(&value("{kind: List, items: [{kind: A}, 3]}"), &doc).expect_err("a number");
        assert_eq!(err.field, "items[1]");
        assert_eq!(item_name(0, &value("{kind: A, metadata: {name: a}}")), "items[0] (A a)");
    }
}
